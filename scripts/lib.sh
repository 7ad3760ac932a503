# Shared helpers for the project's scripts. Sourced, not run.
repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }
cache_dir() { echo "${ARTSTORE_CACHE_DIR:-$HOME/.cache/artstore}"; }
weed_bin() { echo "$(cache_dir)/seaweedfs-venv/bin/weed"; }
pg_bin_dir() {
  local d
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/16/bin /usr/lib/postgresql/17/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  echo /usr/lib/postgresql/15/bin
}
log() { echo "[artstore] $*" >&2; }
# A free TCP port on loopback (the kernel picks it; a tiny race is acceptable for throw-away services).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_tcp() { # host port seconds
  local deadline=$((SECONDS + $3))
  while ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}
# Starts a release `artstore dev-stack` in the background on the services of <services.env> and
# waits for its stack.json; sets dev_stack_pid. Args: <artstore binary> <services.env> <dir>
# <name> <log>.
# Fresh services in $2/services (1 GiB SeaweedFS volumes, as for the benchmarks: scripts/bench.sh
# says why) and a release dev-stack of $1 in $2/stack named $3, both stopped when the script
# exits, warmed up with a few seconds of uploads; sets `services` and `stack_dir`.
start_load_stack() {
  local bin=$1 out=$2 name=$3
  services="$out/services"
  stack_dir="$out/stack"
  mkdir -p "$out"
  dev_stack_pid=""
  trap stop_load_stack EXIT
  ARTSTORE_WEED_VOLUME_SIZE_MB=1024 bash scripts/services.sh start "$services"
  start_dev_stack "$bin/artstore" "$services/services.env" "$stack_dir" "$name" "$out/dev-stack.log"
  "$bin/stack-bench" --stack "$stack_dir/stack.json" --ingester-load-only --throughput-seconds 3 >/dev/null
}
stop_load_stack() {
  [ -n "$dev_stack_pid" ] && kill "$dev_stack_pid" 2>/dev/null && wait "$dev_stack_pid" 2>/dev/null
  bash scripts/services.sh stop "$services" || true
}

start_dev_stack() {
  local bin=$1 env=$2 dir=$3 name=$4 logfile=$5
  rm -f "$dir/stack.json"
  "$bin" dev-stack --services-env "$env" --dir "$dir" --name "$name" > "$logfile" 2>&1 &
  dev_stack_pid=$!
  for _ in $(seq 600); do
    [ -s "$dir/stack.json" ] && return 0
    kill -0 "$dev_stack_pid" 2>/dev/null || { log "dev-stack exited; see $logfile"; return 1; }
    sleep 0.2
  done
  log "dev-stack never wrote $dir/stack.json"
  return 1
}
