#!/usr/bin/env bash
# Builds the benchmark programs in release and runs them all against fresh services, each
# printing its figures next to the ceiling measured in the same run; writes a Markdown table
# (figure, ceiling, ratio, goal, pass/fail per line) to target/bench/summary.md.
#
#   scripts/bench.sh [--quick]
#
# --quick: small sizes (rebuild over 10,000 files, search at 100,000 files, short stack phases)
# for a run of a few minutes; the full run (100,000 files per backend, search at 1,000,000)
# takes much longer. Environment: BENCH_FILES, BENCH_SEARCH_SIZES, BENCH_EVENTS override.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"

quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then
  files=${BENCH_FILES:-10000}; sizes=${BENCH_SEARCH_SIZES:-100000}; events=${BENCH_EVENTS:-20000}
  stack_args=(--seconds 10 --throughput-seconds 10)
else
  files=${BENCH_FILES:-100000}; sizes=${BENCH_SEARCH_SIZES:-100000,1000000}; events=${BENCH_EVENTS:-50000}
  stack_args=()
fi

bash scripts/install.sh
cargo build --release -p artstore-element --features bench --bin element-bench --bin rebuild-bench \
  -p artstore-query --bin query-bench -p artstore --bin artstore --bin stack-bench
bin="$root/target/release"

out="$root/target/bench"
services="$out/services"
mkdir -p "$out"
rows="$out/rows.tsv"
: > "$rows"
export ARTSTORE_BENCH_SUMMARY="$rows"
dev_stack_pid=""
cleanup() {
  [ -n "$dev_stack_pid" ] && kill "$dev_stack_pid" 2>/dev/null && wait "$dev_stack_pid" 2>/dev/null
  bash scripts/services.sh stop "$services" || true
}
trap cleanup EXIT
# Volumes of 1 GiB (the tests' 64 MiB ones fill every few dozen uploads and stall writes ~1 s
# while SeaweedFS grows new ones: that would time SeaweedFS's housekeeping, not the code).
ARTSTORE_WEED_VOLUME_SIZE_MB=${ARTSTORE_WEED_VOLUME_SIZE_MB:-1024} bash scripts/services.sh start "$services"
export ARTSTORE_SERVICES_ENV="$services/services.env"

log "element-bench"
"$bin/element-bench" | tee "$out/element-bench.txt"
log "rebuild-bench --files $files"
"$bin/rebuild-bench" --files "$files" | tee "$out/rebuild-bench.txt"
log "query-bench --events $events --sizes $sizes"
"$bin/query-bench" --events "$events" --sizes "$sizes" | tee "$out/query-bench.txt"

log "stack-bench (release dev-stack on the same services)"
stack_dir="$out/stack"
start_dev_stack "$bin/artstore" "$ARTSTORE_SERVICES_ENV" "$stack_dir" artstore_bench "$out/dev-stack.log"
"$bin/stack-bench" --stack "$stack_dir/stack.json" "${stack_args[@]}" | tee "$out/stack-bench.txt"

{
  echo "# Benchmark summary"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
    "commit $(git rev-parse --short HEAD)$([ -n "$(git status --porcelain)" ] && echo ' (modified)')"
  echo
  echo "| benchmark | figure | ceiling (same run) | ratio | goal | result |"
  echo "|---|---|---|---|---|---|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$rows"
} > "$out/summary.md"
cat "$out/summary.md"
log "summary in $out/summary.md; each program's full output beside it"
