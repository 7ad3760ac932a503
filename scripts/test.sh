#!/usr/bin/env bash
# Runs every test: installs what is missing, starts PostgreSQL, Redis and SeaweedFS on free
# loopback ports, brings up the real single-node Kubernetes with the chart and examples/
# (scripts/node.sh), runs the workspace's tests against them (the end-to-end suite
# e2e/tests/cluster against the node), and tears everything down.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p artstore-element`);
# ARTSTORE_TEST_NODE=0 skips the node (its suite then fails: use it with -p filters only).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"

bash scripts/install.sh
# The Kubernetes binaries (control plane, node, kubectl, helm), built once from their Go modules.
ARTSTORE_K8S_BIN_DIR=$(bash scripts/install-k8s-tools.sh)
export ARTSTORE_K8S_BIN_DIR

services_dir="$root/target/artstore-services"
with_node=${ARTSTORE_TEST_NODE:-1}
cleanup() {
  [ "$with_node" = 1 ] && bash scripts/node.sh down
  bash scripts/services.sh stop "$services_dir"
}
trap cleanup EXIT
bash scripts/services.sh start "$services_dir"
set -a; source "$services_dir/services.env"; set +a

# One build for the tests and the node's image: `cargo test` builds the binaries too, with the
# same features (a separate `cargo build -p artstore` would resolve features differently and
# compile much of the tree again).
t0=$SECONDS
cargo test --workspace --all-targets --no-run "$@"
log "built in $((SECONDS - t0))s"
if [ "$with_node" = 1 ]; then
  t0=$SECONDS
  bash scripts/node.sh down >/dev/null 2>&1 || true   # whatever an interrupted run left
  ARTSTORE_NODE_SKIP_BUILD=1 bash scripts/node.sh up
  log "node up with the archive in $((SECONDS - t0))s"
fi

t0=$SECONDS
cargo test --workspace --all-targets --no-fail-fast "$@"
log "tests finished in $((SECONDS - t0))s"
