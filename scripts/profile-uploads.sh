#!/usr/bin/env bash
# Profiles the small-upload path: a release dev-stack on fresh services takes 4 KiB uploads
# through the ingester at full rate (32 in flight) while `perf record` samples every CPU; then
# prints where the CPU went, per process (ingester, storage elements, query node, PostgreSQL,
# Redis, SeaweedFS, the load generator, the kernel's own threads) and the busiest functions
# inside the ingester and the storage element. Output and perf.data in target/profile/.
#
#   scripts/profile-uploads.sh [--seconds 20] [--symbols]
#
# The release build is stripped, so functions show as [unknown]; --symbols builds a release with
# symbols and line tables into target/profiling (a full build of its own, ~12 min cold).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"

seconds=20
symbols=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --symbols) symbols=1; shift ;;
    *) echo "usage: $0 [--seconds N] [--symbols]" >&2; exit 2 ;;
  esac
done

bash scripts/install.sh
if ! command -v perf >/dev/null; then
  log "installing linux-perf (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
fi
if [ $symbols = 1 ]; then
  export CARGO_TARGET_DIR="$root/target/profiling" CARGO_PROFILE_RELEASE_STRIP=false \
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
fi
cargo build --release -p artstore --bin artstore --bin stack-bench
bin="${CARGO_TARGET_DIR:-$root/target}/release"

out="$root/target/profile"
start_load_stack "$bin" "$out" artstore_profile
log "profiling $seconds s of uploads through the ingester"
"$bin/stack-bench" --stack "$stack_dir/stack.json" --ingester-load-only \
  --throughput-seconds $((seconds + 2)) > "$out/load.txt" &
load_pid=$!
sleep 1
# Which process is which (the stack's children run this same binary, told apart by arguments).
ps -eo pid=,args= > "$out/processes.txt"
perf record -e cpu-clock -F 999 -a -o "$out/perf.data" -- sleep "$seconds" 2>"$out/perf-record.log"
wait "$load_pid"
perf script -i "$out/perf.data" -F pid,ip,sym 2>/dev/null > "$out/samples.txt"

python3 - "$out/processes.txt" "$out/samples.txt" "$(cat "$out/load.txt")" > "$out/profile.txt" <<'PY'
import collections, sys
roles = {}
for line in open(sys.argv[1]):
    pid, _, args = line.strip().partition(' ')
    for needle, role in (('ingester serve', 'ingester'), ('storage-element serve', 'storage element'),
                         ('query-node serve', 'query node'), ('postgres', 'PostgreSQL'),
                         ('redis-server', 'Redis'), ('weed', 'SeaweedFS (S3)'),
                         ('stack-bench', 'load generator (stack-bench)')):
        if needle in args:
            roles[pid] = role
            break
# Where a sample's function comes from: the kernel (addresses in its half), the C library's
# allocator and copies, or the crate its Rust path starts with.
GROUPS = (('aws_', 'AWS SDK (S3 client)'), ('sqlx', 'sqlx (PostgreSQL client)'),
          ('hyper', 'hyper / HTTP'), ('h2::', 'hyper / HTTP'), ('http::', 'hyper / HTTP'),
          ('reqwest', 'hyper / HTTP'), ('axum', 'axum / tower'), ('tower', 'axum / tower'),
          ('tokio', 'tokio'), ('serde', 'serde / JSON'), ('sha2', 'SHA-256'),
          ('regex', 'regex (SDK endpoint rules)'), ('tracing', 'tracing'),
          ('redis', 'redis client'), ('jsonwebtoken', 'JWT'), ('artstore', 'ArtStore code'))
ALLOC = ('malloc', '_int_malloc', '_int_free', 'cfree', 'free', 'realloc', '_int_realloc',
         'unlink_chunk', 'malloc_consolidate', 'calloc')
def group(addr, sym):
    if addr.startswith('ffffffff'):
        return 'kernel (syscalls, network, scheduling)'
    base = sym.split('@')[0].split('.')[0]
    if base in ALLOC:
        return 'C allocator'
    if 'memmove' in sym or 'memcpy' in sym or 'memset' in sym:
        return 'memory copies'
    path = sym.lstrip('<&* ').replace('{{closure}}', '')
    for prefix, name in GROUPS:
        if path.startswith(prefix) or f' {prefix}' in sym[:60] or f'<{prefix}' in sym[:60]:
            return name
    if sym in ('[unknown]', '[unresolved]'):
        return 'unresolved'
    return 'other'
per_role, per_sym = collections.Counter(), collections.defaultdict(collections.Counter)
per_group = collections.defaultdict(collections.Counter)
for line in open(sys.argv[2]):
    parts = line.split(None, 1)
    if not parts:
        continue
    pid = parts[0]
    # "<pid> <address> <symbol>"; the symbol is missing where perf could not resolve one.
    rest = parts[1].split(None, 1) if len(parts) > 1 else []
    sym = rest[1].strip() if len(rest) > 1 else '[unresolved]'
    role = roles.get(pid, 'idle' if pid == '0' else 'other (kernel threads, perf)')
    per_role[role] += 1
    per_sym[role][sym] += 1
    per_group[role][group(rest[0] if rest else '', sym)] += 1
total = sum(per_role.values())
busy = total - per_role['idle']
print(f"# {sys.argv[3]}")
print(f"# CPU samples by process: {total} samples, {100 * busy / total:.0f} % busy")
print("| process | share of busy CPU |")
print("|---|---|")
for role, n in per_role.most_common():
    if role != 'idle':
        print(f"| {role} | {100 * n / busy:.1f} % |")
for role in ('ingester', 'storage element'):
    n_role = per_role[role]
    print(f"\n# the {role}'s samples by where the function comes from")
    print("| from | share |")
    print("|---|---|")
    for name, n in per_group[role].most_common():
        print(f"| {name} | {100 * n / max(n_role, 1):.1f} % |")
for role in ('ingester', 'storage element'):
    n_role = per_role[role]
    print(f"\n# busiest functions in the {role} (share of its own samples)")
    for sym, n in per_sym[role].most_common(25):
        print(f"  {100 * n / max(n_role, 1):5.1f} %  {sym[:110]}")
PY
cat "$out/profile.txt"
log "report in $out/profile.txt; perf.data beside it (perf report -i $out/perf.data)"
