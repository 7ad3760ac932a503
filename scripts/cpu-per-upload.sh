#!/usr/bin/env bash
# What a small upload costs each process, in CPU time, straight to the storage element and
# through the ingester: a release dev-stack on fresh services takes 4 KiB uploads at full rate
# (32 in flight) in each way in turn, and the CPU time every process used during each load
# (from /proc) is divided by the uploads it stored. The difference between the two lines is
# what the ingester's path costs beyond the element's own (docs/performance.md).
#
#   scripts/cpu-per-upload.sh [--seconds 15] [--rounds 2]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"

seconds=15
rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--rounds N]" >&2; exit 2 ;;
  esac
done

bash scripts/install.sh
cargo build --release -p artstore --bin artstore --bin stack-bench
bin="$root/target/release"

out="$root/target/cpu-per-upload"
start_load_stack "$bin" "$out" artstore_cpu

# CPU seconds used so far by each process of the stack, by role, as "role=seconds ...".
cpu_by_role() {
  python3 - <<'PY'
import collections, os
roles = collections.Counter()
tick = os.sysconf('SC_CLK_TCK')
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        args = open(f'/proc/{pid}/cmdline', 'rb').read().replace(b'\0', b' ').decode(errors='replace')
        fields = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    except OSError:
        continue
    for needle, role in (('ingester serve', 'ingester'), ('storage-element serve', 'element'),
                         ('query-node serve', 'query-node'), ('postgres', 'postgresql'),
                         ('redis-server', 'redis'), ('weed', 'seaweedfs')):
        if needle in args:
            roles[role] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
            break
print(' '.join(f'{role}={seconds:.2f}' for role, seconds in sorted(roles.items())))
PY
}

for round in $(seq "$rounds"); do
  for way in element ingester; do
    before=$(cpu_by_role)
    result=$("$bin/stack-bench" --stack "$stack_dir/stack.json" "--$way-load-only" \
      --throughput-seconds "$seconds")
    after=$(cpu_by_role)
    python3 - "$way" "$seconds" "$result" "$before" "$after" <<'PY'
import re, sys
way, seconds, result, before, after = sys.argv[1:]
rate = float(re.search(r': (\d+) uploads/s', result).group(1))
uploads = rate * float(seconds)
parse = lambda text: {k: float(v) for k, v in (item.split('=') for item in text.split())}
b, a = parse(before), parse(after)
ms = {role: 1000 * (a[role] - b.get(role, 0.0)) / uploads for role in a}
detail = '  '.join(f'{role} {v:.3f}' for role, v in sorted(ms.items()))
print(f'{way:>8}: {rate:5.0f} uploads/s  CPU ms per upload: {sum(ms.values()):.3f}  ({detail})')
PY
  done
done | tee "$out/report.txt"
log "report in $out/report.txt (the load generator's own CPU is not counted)"
