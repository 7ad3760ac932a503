#!/usr/bin/env bash
# Builds, once per pinned version, the Kubernetes binaries the tests run from their Go modules
# (e2e/tools/*): etcd, the control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler), the node (kubelet, kube-proxy, CoreDNS), kubectl, helm, and the pause
# binary from Kubernetes' own pause.c, into the cache directory outside the repository, so a
# warm machine never rebuilds them. Prints the bin directory on stdout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
command -v go >/dev/null || { log "go is required to build the Kubernetes test binaries"; exit 1; }

key=$(cat "$root"/e2e/tools/*/go.mod "$root"/e2e/tools/*/go.sum | sha256sum | cut -c1-16)
bin="$(cache_dir)/k8s-tools/$key/bin"
mkdir -p "$bin"
k8s_version=$(awk '/k8s.io\/kubernetes v/ {print $NF; exit}' "$root/e2e/tools/kube/go.mod")
minor=$(echo "$k8s_version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"

build() { # module-dir output package [ldflags]
  local out="$bin/$2"
  [ -x "$out" ] && return 0
  log "building $2 (once; cached in $bin)"
  (cd "$root/e2e/tools/$1" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "${4:-"-s -w"}" -o "$out.tmp" "$3") \
    && mv "$out.tmp" "$out"
}
t0=$SECONDS
build etcd etcd .
build kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kube kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
build helm helm helm.sh/helm/v3/cmd/helm
build kube kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$ldflags"
build kube kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$ldflags"
build kube kubectl k8s.io/kubernetes/cmd/kubectl "$ldflags"
build kube kubelet k8s.io/kubernetes/cmd/kubelet "$ldflags"
build coredns coredns .
# The pod sandbox's pause process, from the pinned module's own source (no registry here).
if [ ! -x "$bin/pause" ]; then
  pause_c=$(cd "$root/e2e/tools/kube" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  gcc -Os -static -Wall -Werror -DVERSION="$k8s_version" -o "$bin/pause.tmp" "$pause_c" && mv "$bin/pause.tmp" "$bin/pause"
fi
[ $((SECONDS - t0)) -gt 1 ] && log "Kubernetes test binaries ready in $((SECONDS - t0))s"
echo "$bin"
