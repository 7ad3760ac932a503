#!/usr/bin/env bash
# Runs the archive locally: installs what is missing, starts PostgreSQL, Redis and SeaweedFS,
# builds the `artstore` binary and runs two storage elements (S3 and a local directory), a query
# node and an ingester as processes. Writes target/artstore-dev/stack.json (URLs, tokens) and
# prints a copy-paste example. Ctrl-C stops everything.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"
bash scripts/install.sh
cargo build -p artstore --bin artstore
services="$root/target/artstore-dev/services"
trap 'bash scripts/services.sh stop "$services"' EXIT
bash scripts/services.sh start "$services"
# Not exec: the trap must still stop the services after the stack ends.
"$root/target/debug/artstore" dev-stack --services-env "$services/services.env" --dir "$root/target/artstore-dev"
