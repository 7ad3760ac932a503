#!/usr/bin/env bash
# Runs the archive locally: installs what is missing, starts PostgreSQL, Redis and SeaweedFS,
# and prints where they are. Ctrl-C stops everything.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"
bash scripts/install.sh
dir="$root/target/artstore-dev/services"
trap 'bash scripts/services.sh stop "$dir"' EXIT
bash scripts/services.sh start "$dir"
log "services are running:"
cat "$dir/services.env"
log "press Ctrl-C to stop"
while sleep 3600; do :; done
