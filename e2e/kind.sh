#!/usr/bin/env bash
# End to end on a kind cluster (needs Docker, kind, kubectl, cargo; helm is used from PATH or
# built by scripts/install-k8s-tools.sh):
#   1. creates the kind cluster (reuses it if it exists),
#   2. builds the image from the Dockerfile and loads it into the cluster,
#   3. starts Redis, PostgreSQL and SeaweedFS in it (e2e/manifests/) and makes the S3 bucket,
#   4. installs the CRDs and `helm install`s the operator chart with that image,
#   5. applies examples/ and waits until every resource is Ready,
#   6. port-forwards the Services, writes target/artstore-kind/stack.json and runs the same
#      suite as the real node: `cargo test -p artstore-e2e --test cluster`.
# The cluster is deleted afterwards unless ARTSTORE_KIND_KEEP=1 (then it is reused next time).
#
# Settings: ARTSTORE_KIND_CLUSTER (artstore-e2e), ARTSTORE_E2E_IMAGE (artstore:e2e),
# ARTSTORE_KIND_KEEP (0), ARTSTORE_KIND_SKIP_BUILD (0: build the image).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
root=$(repo_root)
cd "$root"

cluster=${ARTSTORE_KIND_CLUSTER:-artstore-e2e}
image=${ARTSTORE_E2E_IMAGE:-artstore:e2e}
keep=${ARTSTORE_KIND_KEEP:-0}
skip_build=${ARTSTORE_KIND_SKIP_BUILD:-0}
context="kind-$cluster"
operator_ns=artstore-system
archive_ns=archive
wait_timeout=600s

for tool in docker kind kubectl cargo; do
  command -v "$tool" >/dev/null || { log "$tool is required for the kind end-to-end run"; exit 1; }
done
docker info >/dev/null 2>&1 || { log "no Docker engine answers (docker info failed)"; exit 1; }
if command -v helm >/dev/null; then
  helm=helm
else
  helm="$(bash scripts/install-k8s-tools.sh)/helm"
fi

k() { kubectl --context "$context" "$@"; }

forward_pids=()
cleanup() {
  local status=$?
  for pid in "${forward_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    log "failed; state of the cluster:"
    k get artstore -A -o wide || true
    k -n "$archive_ns" get pods,jobs -o wide || true
    k -n "$archive_ns" describe eventstreams,storageelements,querynodes,ingesters | tail -n 80 || true
    k -n "$archive_ns" get events --sort-by=.lastTimestamp | tail -n 40 || true
    k -n "$operator_ns" logs deploy/artstore-operator --tail=100 || true
  fi
  if [ "$keep" = 1 ]; then
    log "keeping cluster $cluster (kubectl --context $context …; kind delete cluster --name $cluster)"
  else
    kind delete cluster --name "$cluster" || true
  fi
  exit "$status"
}
trap cleanup EXIT

if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  log "reusing kind cluster $cluster"
else
  log "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --wait 180s
fi

if [ "$skip_build" != 1 ]; then
  log "building $image"
  DOCKER_BUILDKIT=1 docker build -t "$image" .
fi
log "loading $image into the cluster"
kind load docker-image "$image" --name "$cluster"

log "starting Redis, PostgreSQL and SeaweedFS"
k apply -k e2e/manifests/
for d in redis postgres seaweedfs; do
  k -n artstore-deps rollout status "deploy/$d" --timeout="$wait_timeout"
done
log "creating the S3 bucket"
for attempt in $(seq 1 30); do
  if k -n artstore-deps exec deploy/seaweedfs -- \
      sh -c 'echo "s3.bucket.create -name artstore-se-s3" | weed shell' >/dev/null 2>&1 \
    && k -n artstore-deps exec deploy/seaweedfs -- \
      sh -c 'echo "s3.bucket.list" | weed shell' 2>/dev/null | grep -q artstore-se-s3; then
    break
  fi
  [ "$attempt" = 30 ] && { log "could not create the bucket"; exit 1; }
  sleep 2
done

log "installing the operator"
# helm installs crds/ only on first install and never upgrades them: apply them first.
k apply --server-side --force-conflicts -f charts/artstore-operator/crds/
"$helm" upgrade --install artstore-operator charts/artstore-operator \
  --kube-context "$context" --namespace "$operator_ns" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
  --set image.pullPolicy=Never --set workloadImagePullPolicy=Never \
  --set logFormat=text --wait --timeout 5m

log "applying examples/"
k apply -f examples/
log "waiting until every resource is Ready"
k -n "$archive_ns" wait --for=condition=Ready --timeout="$wait_timeout" \
  eventstream/files storageelement/se-s3 storageelement/se-volume querynode/search ingester/upload
k -n "$archive_ns" rollout status deploy/upload --timeout="$wait_timeout"
k -n "$archive_ns" rollout status deploy/search --timeout="$wait_timeout"
k get artstore -n "$archive_ns" -o wide

# Port-forwards run in this shell (not in $(…)) so cleanup can stop them. kind's ClusterIPs are
# not reachable from the host, so every URL of the stack file goes through one.
forward() { # namespace service; sets forwarded_url
  local port; port=$(free_port)
  k -n "$1" port-forward "svc/$2" "$port:$(k -n "$1" get svc "$2" -o jsonpath='{.spec.ports[0].port}')" >/dev/null 2>&1 &
  forward_pids+=("$!")
  wait_tcp 127.0.0.1 "$port" 30 || { log "port-forward to $2 did not open"; exit 1; }
  forwarded_url="127.0.0.1:$port"
}
stack_dir="$root/target/artstore-kind"
mkdir -p "$stack_dir"
k -n "$archive_ns" get secret artstore-jwt -o jsonpath='{.data.secret}' | base64 -d > "$stack_dir/jwt-secret"
cargo build -q -p artstore --bin artstore
token() { ARTSTORE_JWT_SECRET_FILE="$stack_dir/jwt-secret" "$root/target/debug/artstore" token --role "$1" --sub "kind-$1"; }
forward "$archive_ns" upload; ingester_url="http://$forwarded_url"
forward "$archive_ns" search; query_url="http://$forwarded_url"
forward artstore-deps redis; redis_url="redis://$forwarded_url/0"
elements=()
for se in $(k -n "$archive_ns" get storageelements -o jsonpath='{.items[*].metadata.name}'); do
  forward "$archive_ns" "$se"
  elements+=("$(k -n "$archive_ns" get storageelement "$se" -o json | URL="http://$forwarded_url" python3 -c '
import json, os, sys
o = json.load(sys.stdin); s = o["spec"]
print(json.dumps({"id": s.get("elementId") or o["metadata"]["name"], "url": os.environ["URL"], "mode": s["mode"], "priority": s["priority"]}))')")
done
STREAM=$(k -n "$archive_ns" get eventstream files -o jsonpath='{.spec.stream}') \
INGESTER=$ingester_url QUERY=$query_url REDIS=$redis_url \
ADMIN=$(token admin) WRITER=$(token writer) READER=$(token reader) \
python3 -c '
import json, os, sys
e = os.environ
json.dump({"ingester_url": e["INGESTER"], "query_url": e["QUERY"],
           "storage_elements": [json.loads(x) for x in sys.argv[2:]],
           "redis_url": e["REDIS"], "stream": e["STREAM"],
           "tokens": {"admin": e["ADMIN"], "writer": e["WRITER"], "reader": e["READER"]}},
          open(sys.argv[1], "w"), indent=2)' "$stack_dir/stack.json" "${elements[@]}"
k config view --raw --minify > "$stack_dir/kubeconfig"

log "running the end-to-end suite"
ARTSTORE_STACK="$stack_dir/stack.json" KUBECONFIG="$stack_dir/kubeconfig" \
  cargo test -p artstore-e2e --test cluster -- --nocapture
log "kind end-to-end run passed"
