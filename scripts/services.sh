#!/usr/bin/env bash
# Starts or stops PostgreSQL, Redis and SeaweedFS (S3) as throw-away processes on free loopback
# ports, all state under one directory, and writes their connection details to one env file.
#
#   scripts/services.sh start [DIR]   # default DIR: target/artstore-services
#   scripts/services.sh stop  [DIR]
#   scripts/services.sh env   [DIR]   # prints the env file
set -euo pipefail
source "$(dirname "$0")/lib.sh"

cmd=${1:-}
dir=${2:-$(repo_root)/target/artstore-services}
# Absolute: `stop` runs pg_ctl from inside the directory.
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac

start() {
  # A start that failed halfway leaves no env file but may leave processes and huge pages.
  if [ -d "$dir" ]; then stop; fi
  rm -rf "$dir"; mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local t0=$SECONDS pg_port redis_port s3_port
  pg_port=$(free_port); redis_port=$(free_port)

  # shared_buffers 1 GB (not the 128 MB default): a search over a million cached files visits
  # thousands of heap pages, and reading them through the OS page cache costs 2-3x the CPU
  # (docs/performance.md, "Search at a million files"). On huge pages (below) the whole pool is
  # reserved when the server starts.
  # PostgreSQL refuses to run as root: the data directory belongs to the postgres user.
  mkdir -p "$dir/pg"
  local as_pg=()
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir/pg"; as_pg=(runuser -u postgres --); fi
  (cd "$dir/pg" && "${as_pg[@]}" "$(pg_bin_dir)/initdb" -D "$dir/pg/data" --auth=trust -U postgres \
      -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/pg/initdb.log" 2>&1) || { cat "$dir/pg/initdb.log" >&2; exit 1; }
  local pg_settings="-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=${ARTSTORE_PG_SHARED_BUFFERS:-1GB}"
  pg_settings+=" -c huge_pages=$(reserve_huge_pages "$pg_settings")"
  (cd "$dir/pg" && "${as_pg[@]}" "$(pg_bin_dir)/pg_ctl" -D "$dir/pg/data" -w -t 30 -l "$dir/pg/server.log" \
      -o "-h 127.0.0.1 -p $pg_port -k $dir/pg $pg_settings" \
      start >/dev/null) || { cat "$dir/pg/server.log" >&2; exit 1; }

  mkdir -p "$dir/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --daemonize yes \
    --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" --dir "$dir/redis"
  wait_tcp 127.0.0.1 "$redis_port" 10 || { log "redis did not start"; cat "$dir/redis/redis.log" >&2; exit 1; }

  # SeaweedFS: every port explicit and bound to loopback, S3 credentials enforced. Small volumes
  # (64 MiB) so that every test can have its own bucket (each bucket grows volumes of its own);
  # a full volume stalls writes ~1 s while new ones grow, so benchmarks ask for larger ones
  # (ARTSTORE_WEED_VOLUME_SIZE_MB), as a production server has (30 GB by default).
  mkdir -p "$dir/s3/data"
  local p; declare -A ports
  for p in master master.grpc volume volume.grpc filer filer.grpc s3 s3.grpc admin admin.grpc; do ports[$p]=$(free_port); done
  s3_port=${ports[s3]}
  local access_key=artstore-test secret_key
  secret_key=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  # `cd` on its own line: with `cd && weed &` the recorded pid would be a subshell's, not weed's.
  (cd "$dir/s3"
   AWS_ACCESS_KEY_ID=$access_key AWS_SECRET_ACCESS_KEY=$secret_key nohup "$(weed_bin)" mini \
      -dir="$dir/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -master.port="${ports[master]}" -master.port.grpc="${ports[master.grpc]}" \
      -volume.port="${ports[volume]}" -volume.port.grpc="${ports[volume.grpc]}" \
      -filer.port="${ports[filer]}" -filer.port.grpc="${ports[filer.grpc]}" \
      -s3.port="$s3_port" -s3.port.grpc="${ports[s3.grpc]}" \
      -admin.port="${ports[admin]}" -admin.port.grpc="${ports[admin.grpc]}" \
      -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
      -volume.max=5000 -master.volumeSizeLimitMB="${ARTSTORE_WEED_VOLUME_SIZE_MB:-64}" \
      >"$dir/s3/weed.log" 2>&1 & echo $! >"$dir/s3/weed.pid")
  # Ready means an S3 request gets an S3 answer (the port opens before the filer is up).
  local deadline=$((SECONDS + 60))
  until curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3_port/" 2>/dev/null | grep -qE '^(200|403)$'; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$dir/s3/weed.pid")" 2>/dev/null; then
      log "SeaweedFS did not start"; tail -30 "$dir/s3/weed.log" >&2; exit 1
    fi
    sleep 0.2
  done

  cat >"$dir/services.env" <<ENV
ARTSTORE_SERVICES_DIR=$dir
ARTSTORE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/postgres
ARTSTORE_TEST_PG_BIN_DIR=$(pg_bin_dir)
ARTSTORE_TEST_REDIS_URL=redis://127.0.0.1:$redis_port
ARTSTORE_TEST_REDIS_SERVER_BIN=$(command -v redis-server)
ARTSTORE_TEST_S3_ENDPOINT=http://127.0.0.1:$s3_port
ARTSTORE_TEST_S3_REGION=us-east-1
ARTSTORE_TEST_S3_ACCESS_KEY=$access_key
ARTSTORE_TEST_S3_SECRET_KEY=$secret_key
ARTSTORE_TEST_WEED_BIN=$(weed_bin)
ENV
  log "services up in $((SECONDS - t0))s: postgres :$pg_port, redis :$redis_port, s3 :$s3_port; env in $dir/services.env"
}

# Huge pages for PostgreSQL's shared memory: with 4 KiB pages every new backend takes a page
# fault the first time it touches each page of the buffer pool (~5 µs each on these machines), so
# a search on a fresh connection costs 3x one on a warm connection (docs/performance.md). As
# root, reserves the pages the server needs (PostgreSQL computes the number) and gives them back
# on stop; a reservation the kernel cannot fully grant is given back at once. Prints the
# huge_pages setting: always `try` (PostgreSQL's default), so a shortfall (say another server
# mapped the pages first) costs speed, never the start. ARTSTORE_PG_HUGE_PAGES=0 reserves none.
reserve_huge_pages() {
  local settings=$1 need available total
  if [ "${ARTSTORE_PG_HUGE_PAGES:-1}" = 0 ] || [ "$(id -u)" != 0 ] || [ ! -w /proc/sys/vm/nr_hugepages ]; then
    echo try; return
  fi
  # shellcheck disable=SC2086 # the settings are words on purpose
  need=$(cd "$dir/pg" && runuser -u postgres -- "$(pg_bin_dir)/postgres" -D "$dir/pg/data" $settings \
    -C shared_memory_size_in_huge_pages 2>/dev/null) || { echo try; return; }
  available=$(huge_pages_unclaimed)
  if [ "$available" -lt "$need" ]; then
    total=$(cat /proc/sys/vm/nr_hugepages)
    echo $((total + need - available)) >/proc/sys/vm/nr_hugepages 2>/dev/null || true
    echo $(($(cat /proc/sys/vm/nr_hugepages) - total)) >"$dir/pg/huge-pages-added"
    if [ "$(huge_pages_unclaimed)" -lt "$need" ]; then
      log "only $(huge_pages_unclaimed) of $need huge pages: PostgreSQL runs on 4 KiB pages"
      release_huge_pages
    fi
  fi
  echo try
}

# Huge pages neither in use nor promised to a running server.
huge_pages_unclaimed() {
  awk '/^HugePages_Free:/ {f=$2} /^HugePages_Rsvd:/ {r=$2} END {print f - r}' /proc/meminfo
}

release_huge_pages() {
  local added total
  [ -f "$dir/pg/huge-pages-added" ] || return 0
  added=$(cat "$dir/pg/huge-pages-added"); total=$(cat /proc/sys/vm/nr_hugepages)
  # Forget the record only once the pages are given back (a non-root stop cannot).
  echo $((total > added ? total - added : 0)) 2>/dev/null >/proc/sys/vm/nr_hugepages || return 0
  rm -f "$dir/pg/huge-pages-added" || true
}

stop() {
  [ -d "$dir" ] || return 0
  if [ -f "$dir/s3/weed.pid" ]; then kill "$(cat "$dir/s3/weed.pid")" 2>/dev/null || true; fi
  if [ -f "$dir/redis/redis.pid" ]; then kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true; fi
  if [ -f "$dir/pg/data/postmaster.pid" ]; then
    local as_pg=(); [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
    (cd "$dir/pg" && "${as_pg[@]}" "$(pg_bin_dir)/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1) || true
  fi
  release_huge_pages
  if [ -f "$dir/s3/weed.pid" ]; then
    local pid; pid=$(cat "$dir/s3/weed.pid"); local i
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/services.env"
  log "services in $dir stopped"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env) cat "$dir/services.env" ;;
  *) echo "usage: $0 start|stop|env [DIR]" >&2; exit 2 ;;
esac
