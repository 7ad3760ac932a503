#!/usr/bin/env bash
# Runs every test: installs what is missing, starts PostgreSQL, Redis and SeaweedFS on free
# loopback ports, runs the workspace's tests against them, and tears everything down.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p artstore-element`).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"

bash scripts/install.sh
# etcd, kube-apiserver, kube-controller-manager and helm, built once from their Go modules.
ARTSTORE_K8S_BIN_DIR=$(bash scripts/install-k8s-tools.sh)
export ARTSTORE_K8S_BIN_DIR

services_dir="$root/target/artstore-services"
trap 'bash scripts/services.sh stop "$services_dir"' EXIT
bash scripts/services.sh start "$services_dir"
set -a; source "$services_dir/services.env"; set +a

t0=$SECONDS
cargo test --workspace --all-targets "$@"
log "tests finished in $((SECONDS - t0))s"
