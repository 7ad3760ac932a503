#!/usr/bin/env bash
# The chaos test's long form (docs/faults.md, "Chaos test"): the same test the test command runs
# in its bounded form (one round of every fault), here for as many minutes of faults as asked.
#
#   scripts/chaos.sh [--minutes 20] [--seed N] [--clients 4]
#
# It starts its own PostgreSQL, Redis and SeaweedFS and its own archive processes (nothing shared
# with other tests), prints the seed and the fault schedule first and the ledger's totals last,
# and exits non-zero on any loss, duplicate, stale or half-applied change, leak or undelivered
# event. Logs of a failed run stay in target/chaos/<seed>-<pid>/logs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$(repo_root)"

minutes=20 seed="" clients=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes N] [--seed N] [--clients N]" >&2; exit 2 ;;
  esac
done

bash scripts/install.sh
export ARTSTORE_CHAOS_MINUTES=$minutes
[ -n "$seed" ] && export ARTSTORE_CHAOS_SEED=$seed
[ -n "$clients" ] && export ARTSTORE_CHAOS_CLIENTS=$clients
exec cargo test -p artstore --test chaos -- --nocapture
