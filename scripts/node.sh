#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, running the archive as real pods:
#   scripts/node.sh up     build what is missing, start the node, install the chart and examples/,
#                          wait until every ArtStore resource is Ready, write stack.json
#   scripts/node.sh down   stop everything and remove every trace (processes, bridge, tables,
#                          mounts, cgroups, sysctls)
#   scripts/node.sh env    print KUBECONFIG and the stack file for `eval`
#
# The node: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
# (iptables) and CoreDNS as host processes, containerd + runc from Debian, the bridge CNI
# plugin on a bridge of its own (artstore0, 10.213.0.0/24, no masquerading: traffic only goes
# between the host and that bridge). Images are assembled locally (scripts/images.sh) and
# imported into containerd; nothing is pulled. PostgreSQL runs on the host behind a
# selector-less Service (docs/real-node.md says why). Needs root.
#
# Settings: ARTSTORE_NODE_DIR (target/artstore-node), ARTSTORE_NODE_PROFILE (debug|release:
# which cargo build goes into the image; debug), ARTSTORE_NODE_SKIP_BUILD=1 (use the binaries
# already in target/, as scripts/test.sh does after its own build), ARTSTORE_NODE_MIN_FREE_GIB
# (8: `up` refuses to start with less free disk).
set -Eeuo pipefail
source "$(dirname "$0")/lib.sh"
root=$(repo_root)
cd "$root"

dir=${ARTSTORE_NODE_DIR:-$root/target/artstore-node}
profile=${ARTSTORE_NODE_PROFILE:-debug}
bridge=artstore0
node_ip=10.213.0.1
pod_cidr=10.213.0.0/24
service_cidr=10.213.128.0/24
kubernetes_service_ip=10.213.128.1
node_name=artstore-node
api_url="https://$node_ip:6443"
operator_ns=artstore-system
archive_ns=archive
deps_ns=artstore-deps
image=docker.io/library/artstore:node
wait_timeout=300s

run_dir="$dir/run"          # pid files
log_dir="$dir/logs"
pki="$dir/pki"
kubeconfig="$dir/kubeconfig"
cri_sock="$dir/containerd/containerd.sock"

k() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
ctr_() { ctr -a "$cri_sock" -n k8s.io "$@"; }

# Starts a host process in the background, its output in logs/NAME.log, its pid in run/NAME.pid.
start_process() { # name command...
  local name=$1; shift
  if [ -f "$run_dir/$name.pid" ] && kill -0 "$(cat "$run_dir/$name.pid")" 2>/dev/null; then return 0; fi
  setsid "$@" >"$log_dir/$name.log" 2>&1 < /dev/null &
  echo $! > "$run_dir/$name.pid"
}

wait_for() { # description seconds command...
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.5
  done
}

# --- sysctls the node changes; their old values are restored by `down` -----------------------
saved_sysctls="$dir/sysctls.saved"
sysctl_keys=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory
  kernel.panic kernel.panic_on_oops)

save_sysctls() {
  [ -f "$saved_sysctls" ] && return 0
  local key
  for key in "${sysctl_keys[@]}"; do
    [ -e "/proc/sys/${key//.//}" ] && echo "$key=$(sysctl -n "$key")"
  done > "$saved_sysctls"
}

restore_sysctls() {
  [ -f "$saved_sysctls" ] || return 0
  local line
  while read -r line; do sysctl -qw "$line" || true; done < "$saved_sysctls"
  rm -f "$saved_sysctls"
}

# --- certificates and kubeconfig -----------------------------------------------------------
make_pki() {
  [ -f "$pki/apiserver.crt" ] && return 0
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj "/CN=artstore-node-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:%s,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' \
      "$node_ip" "$kubernetes_service_ip" > san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 30 -extfile san.ext 2>/dev/null
    openssl genrsa -out service-account.key 2048 2>/dev/null
    openssl rsa -in service-account.key -pubout -out service-account.pub 2>/dev/null
    # One static admin token (group system:masters) for every node component and the tests.
    openssl rand -hex 24 > admin.token
    echo "$(cat admin.token),admin,admin,system:masters" > tokens.csv
  )
  cat > "$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $node_name
  cluster:
    server: $api_url
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    token: $(cat "$pki/admin.token")
contexts:
- name: $node_name
  context: {cluster: $node_name, user: admin}
current-context: $node_name
EOF
  chmod 0600 "$kubeconfig"
}

# --- network ---------------------------------------------------------------------------------
make_bridge() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "$node_ip/24" dev "$bridge"
  fi
  ip link set "$bridge" up
  save_sysctls
  save_firewall_tables
  sysctl -qw net.ipv4.ip_forward=1
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  mkdir -p "$dir/cni/net.d" "$dir/cni/ipam"
  cat > "$dir/cni/net.d/10-artstore.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "artstore",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{"subnet": "$pod_cidr", "rangeStart": "10.213.0.10", "gateway": "$node_ip"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  # Pods resolve through CoreDNS only; the host's resolver never reaches them.
  printf 'nameserver %s\nsearch cluster.local\n' "$node_ip" > "$dir/resolv.conf"
}

# --- processes -------------------------------------------------------------------------------
start_containerd() {
  mkdir -p "$dir/containerd"
  cat > "$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$cri_sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # This machine lacks CAP_SYS_RESOURCE: a negative oom_score_adj makes every sandbox fail.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
  start_process containerd containerd --config "$dir/containerd/config.toml"
  wait_for containerd 30 ctr -a "$cri_sock" version
}

start_control_plane() {
  local etcd_port etcd_peer_port
  etcd_port=$(free_port); etcd_peer_port=$(free_port)
  start_process etcd "$bin/etcd" --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "default=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync=true --quota-backend-bytes=2147483648
  echo "$etcd_port" > "$run_dir/etcd.port"
  etcd_port=$(cat "$run_dir/etcd.port")
  start_process kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$node_ip" --advertise-address "$node_ip" --secure-port 6443 \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/service-account.pub" \
    --service-account-signing-key-file "$pki/service-account.key" \
    --service-cluster-ip-range "$service_cidr" --service-node-port-range 30000-30100 \
    --allow-privileged=true --enable-priority-and-fairness=false \
    --kubelet-preferred-address-types InternalIP
  wait_for kube-apiserver 90 k get --raw /readyz
  start_process kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$kubeconfig" --leader-elect=false --secure-port 0 \
    --service-account-private-key-file "$pki/service-account.key" --use-service-account-credentials \
    --root-ca-file "$pki/ca.crt" --service-cluster-ip-range "$service_cidr" \
    --controllers '*,-node-ipam-controller,-cloud-node-lifecycle-controller' \
    --concurrent-gc-syncs 5
  start_process kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$kubeconfig" --leader-elect=false --secure-port 0
}

# The cgroup every pod goes under (kubelet's cgroupRoot) must exist in each v1 hierarchy.
make_cgroups() {
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [ -f "$hierarchy/cgroup.procs" ] && [ "$hierarchy" != /sys/fs/cgroup/unified/ ] || continue
    mkdir -p "$hierarchy/artstore-node"
    if [ -f "$hierarchy/cpuset.cpus" ]; then
      cat "$hierarchy/cpuset.cpus" > "$hierarchy/artstore-node/cpuset.cpus"
      cat "$hierarchy/cpuset.mems" > "$hierarchy/artstore-node/cpuset.mems"
    fi
  done
}

start_node() {
  mkdir -p "$dir/kubelet" "$dir/kube-proxy"
  make_cgroups
  cat > "$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /artstore-node
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
resolvConf: $dir/resolv.conf
clusterDNS: [$node_ip]
clusterDomain: cluster.local
# Imported images are not pinned: image GC must never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
maxPods: 60
# Mounted ConfigMaps (the archive's registry of storage elements) follow changes within
# seconds instead of the default minute.
syncFrequency: 10s
serializeImagePulls: false
EOF
  start_process kubelet "$bin/kubelet" \
    --config "$dir/kubelet/config.yaml" --kubeconfig "$kubeconfig" \
    --container-runtime-endpoint "unix://$cri_sock" --root-dir "$dir/kubelet/root" \
    --hostname-override "$node_name" --node-ip "$node_ip" --cert-dir "$dir/kubelet/pki"
  cat > "$dir/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $kubeconfig}
mode: iptables
clusterCIDR: $pod_cidr
hostnameOverride: $node_name
bindAddress: $node_ip
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start_process kube-proxy "$bin/kube-proxy" --config "$dir/kube-proxy/config.yaml"
  cat > "$dir/Corefile" <<EOF
.:53 {
    bind $node_ip
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa {
        kubeconfig $kubeconfig $node_name
        pods insecure
    }
    cache 5
}
EOF
  start_process coredns "$bin/coredns" -conf "$dir/Corefile"
  wait_for "node $node_name Ready" 120 k wait --for=condition=Ready "node/$node_name" --timeout=2s
}

# Default StorageClass `local` with static PersistentVolumes (directories made beforehand;
# the in-tree hostPath provisioner makes root-owned directories that fsGroup cannot fix).
make_storage() {
  local i
  k apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
  for i in 1 2 3 4; do
    mkdir -p "$dir/volumes/pv$i"
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $node_name-pv$i
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: $dir/volumes/pv$i}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$node_name]}
EOF
  done
}

# PostgreSQL on the host, on the bridge address, behind the selector-less Service of
# e2e/node/deps. One database per role instance, as e2e/manifests/postgres.yaml makes them.
start_postgres() {
  local pg_dir="$dir/postgres"
  if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
    mkdir -p "$pg_dir" && chown postgres: "$pg_dir"
    (cd "$pg_dir" && runuser -u postgres -- "$(pg_bin_dir)/initdb" -D "$pg_dir/data" -U postgres \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null)
    echo "host all all $pod_cidr scram-sha-256" >> "$pg_dir/data/pg_hba.conf"
  fi
  if ! runuser -u postgres -- "$(pg_bin_dir)/pg_ctl" -D "$pg_dir/data" status >/dev/null 2>&1; then
    (cd "$pg_dir" && runuser -u postgres -- "$(pg_bin_dir)/pg_ctl" -D "$pg_dir/data" -w -l "$pg_dir/postgres.log" \
      -o "-h $node_ip -p 5432 -k $pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=${ARTSTORE_PG_SHARED_BUFFERS:-1GB}" start >/dev/null)
  fi
  local psql=("$(pg_bin_dir)/psql" -h "$pg_dir" -p 5432 -U postgres -qAt)
  if [ "$("${psql[@]}" -c "select 1 from pg_roles where rolname='artstore'")" != 1 ]; then
    "${psql[@]}" -c "create role artstore login password 'artstore'"
  fi
  local db
  for db in se_s3 se_volume query query_extra; do
    [ "$("${psql[@]}" -c "select 1 from pg_database where datname='$db'")" = 1 ] ||
      "${psql[@]}" -c "create database $db owner artstore"
  done
}

# --- the archive -----------------------------------------------------------------------------
install_archive() {
  local helm="$bin/helm" attempt
  k apply -k e2e/node/deps >/dev/null
  for d in redis seaweedfs; do
    k -n "$deps_ns" rollout status "deploy/$d" --timeout="$wait_timeout" >/dev/null
  done
  log "creating the S3 bucket"
  for attempt in $(seq 1 30); do
    if echo "s3.bucket.create -name artstore-se-s3" | k -n "$deps_ns" exec -i deploy/seaweedfs -- weed shell >/dev/null 2>&1 \
      && echo "s3.bucket.list" | k -n "$deps_ns" exec -i deploy/seaweedfs -- weed shell 2>/dev/null | grep -q artstore-se-s3; then
      break
    fi
    [ "$attempt" = 30 ] && { log "could not create the bucket"; return 1; }
    sleep 2
  done
  log "installing the operator chart"
  # helm installs crds/ only on first install and never upgrades them: apply them first
  # (the chart README's documented upgrade step).
  k apply --server-side --force-conflicts -f charts/artstore-operator/crds/ >/dev/null
  "$helm" upgrade --install artstore-operator charts/artstore-operator --kubeconfig "$kubeconfig" \
    --namespace "$operator_ns" --create-namespace \
    --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
    --set image.pullPolicy=Never --set workloadImagePullPolicy=Never \
    --set logFormat=text --wait --timeout 5m >/dev/null
  log "applying examples/"
  wait_for "namespace defaults" 30 k get serviceaccount default -n default
  k apply -f examples/ >/dev/null
  k -n "$archive_ns" wait --for=condition=Ready --timeout="$wait_timeout" \
    eventstream/files storageelement/se-s3 storageelement/se-volume querynode/search ingester/upload >/dev/null
  k -n "$archive_ns" rollout status deploy/upload --timeout="$wait_timeout" >/dev/null
  k -n "$archive_ns" rollout status deploy/search --timeout="$wait_timeout" >/dev/null
}

cluster_ip() { k -n "$archive_ns" get svc "$1" -o jsonpath='{.spec.clusterIP}:{.spec.ports[0].port}'; }

write_stack() {
  local secret_file="$dir/jwt-secret" artstore_bin="$root/target/$profile/artstore"
  k -n "$archive_ns" get secret artstore-jwt -o jsonpath='{.data.secret}' | base64 -d > "$secret_file"
  chmod 0600 "$secret_file"
  token() { ARTSTORE_JWT_SECRET_FILE="$secret_file" "$artstore_bin" token --role "$1" --sub "node-$1"; }
  local redis_url stream elements
  redis_url="redis://$(k -n "$deps_ns" get svc redis -o jsonpath='{.spec.clusterIP}:{.spec.ports[0].port}')/0"
  stream=$(k -n "$archive_ns" get eventstream files -o jsonpath='{.spec.stream}')
  elements=$(k -n "$archive_ns" get storageelements -o json | python3 -c '
import json, sys, subprocess
out = []
for se in json.load(sys.stdin)["items"]:
    spec, name = se["spec"], se["metadata"]["name"]
    out.append({"id": spec.get("elementId") or name, "name": name, "mode": spec["mode"], "priority": spec["priority"]})
print(json.dumps(out))')
  python3 - "$dir/stack.json" "$elements" <<EOF
import json, sys, subprocess
def ip(svc):
    return subprocess.check_output(["$bin/kubectl", "--kubeconfig", "$kubeconfig", "-n", "$archive_ns", "get", "svc", svc,
        "-o", "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}"], text=True)
elements = json.loads(sys.argv[2])
stack = {
    "ingester_url": "http://" + ip("upload"),
    "query_url": "http://" + ip("search"),
    "storage_elements": [dict(id=e["id"], url="http://" + ip(e["name"]), mode=e["mode"], priority=e["priority"]) for e in elements],
    "redis_url": "$redis_url",
    "stream": "$stream",
    "tokens": {"admin": "$(token admin)", "writer": "$(token writer)", "reader": "$(token reader)"},
}
with open(sys.argv[1], "w") as f:
    json.dump(stack, f, indent=2)
EOF
}

# What a failed bring-up shows: the state of the cluster and the end of every log.
diagnose() {
  log "node.sh up failed; state of the node:"
  df -h "$dir" 2>&1 || true
  k get nodes,pods -A -o wide 2>&1 | tail -n 40 || true
  k get artstore -A -o wide 2>&1 || true
  k -n "$archive_ns" describe eventstreams,storageelements,querynodes,ingesters 2>&1 | tail -n 60 || true
  k get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 40 || true
  k -n "$operator_ns" logs deploy/artstore-operator --tail=60 2>&1 || true
  local f
  for f in "$log_dir"/*.log; do echo "--- $f"; tail -n 15 "$f"; done
}

# Below a few GiB free, images, pod logs and the archive's volumes fill the disk mid-run and
# kubelet evicts the pods (its hard threshold is 1 %): say so now rather than time out later.
min_free_gib=${ARTSTORE_NODE_MIN_FREE_GIB:-8}
check_free_disk() {
  mkdir -p "$dir"
  local free_gib
  free_gib=$(( $(df --output=avail -k "$dir" | tail -n 1) / 1024 / 1024 ))
  if [ "$free_gib" -lt "$min_free_gib" ]; then
    log "only $free_gib GiB free on the disk of $dir (the node needs $min_free_gib: ARTSTORE_NODE_MIN_FREE_GIB)"
    return 1
  fi
}

up() {
  [ "$(id -u)" = 0 ] || { log "the node needs root (containerd, kubelet, iptables)"; exit 1; }
  trap diagnose ERR
  local t0=$SECONDS
  check_free_disk
  bash scripts/install.sh
  bin=$(bash scripts/install-k8s-tools.sh)
  mkdir -p "$dir" "$run_dir" "$log_dir"
  echo "$bin" > "$dir/bin-dir"
  if [ "${ARTSTORE_NODE_SKIP_BUILD:-0}" != 1 ] || [ ! -x "target/$profile/artstore" ] || [ ! -x "target/$profile/artstore-operator" ] || [ ! -x "target/$profile/kubectl-artstore" ]; then
    log "building the archive's binaries ($profile)"
    local cargo_profile=()
    [ "$profile" = release ] && cargo_profile=(--release)
    cargo build "${cargo_profile[@]}" -p artstore -p artstore-operator -p kubectl-artstore \
      --bin artstore --bin artstore-operator --bin kubectl-artstore
  fi
  make_pki
  make_bridge
  start_containerd
  ARTSTORE_IMAGE_PROFILE=$profile bash scripts/images.sh "$cri_sock" "$bin"
  start_control_plane
  start_node
  make_storage
  start_postgres
  log "node Ready in $((SECONDS - t0))s; installing the archive"
  install_archive
  write_stack
  log "archive Ready in $((SECONDS - t0))s; stack: $dir/stack.json; KUBECONFIG=$kubeconfig"
}

# --- teardown ------------------------------------------------------------------------------
stop_pid() { # name [signal]
  local pid_file="$run_dir/$1.pid" pid i
  [ -f "$pid_file" ] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-${2:-TERM}" "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

# nftables tables that did not exist before `up` go whole; in those that did, the node's chains
# (KUBE-* of kubelet and kube-proxy, CNI-* of the plugins) and the rules jumping to them go.
save_firewall_tables() {
  [ -f "$dir/nft-tables.before" ] || nft list tables > "$dir/nft-tables.before"
}

remove_firewall_rules() {
  local family name tool
  if [ -f "$dir/nft-tables.before" ]; then
    nft list tables | while read -r _ family name; do
      grep -qx "table $family $name" "$dir/nft-tables.before" || nft delete table "$family" "$name"
    done
  fi
  for tool in iptables ip6tables; do
    if "$tool-save" 2>/dev/null | grep -q -- 'KUBE-\|CNI-'; then
      "$tool-save" | grep -v -- 'KUBE-\|CNI-' | "$tool-restore"
    fi
  done
}

remove_cgroups() {
  local hierarchy
  for hierarchy in /sys/fs/cgroup/*/; do
    [ -d "$hierarchy/artstore-node" ] || continue
    find "$hierarchy/artstore-node" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

down() {
  [ -d "$dir" ] || { log "no node at $dir"; return 0; }
  bin=$(cat "$dir/bin-dir" 2>/dev/null || echo /nonexistent)
  local t0=$SECONDS
  # Pods go first while kubelet still runs, so CNI releases their addresses.
  if [ -f "$run_dir/kubelet.pid" ] && k get --raw /readyz >/dev/null 2>&1; then
    k delete namespace "$archive_ns" "$deps_ns" "$operator_ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    k delete pods -A --all --grace-period=1 --timeout=60s >/dev/null 2>&1 || true
  fi
  for name in coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_pid "$name"
  done
  # Whatever sandboxes remain: stop them through containerd, then containerd itself.
  if [ -S "$cri_sock" ]; then
    local task
    for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$task" >/dev/null 2>&1 || true; done
  fi
  stop_pid containerd
  pkill -KILL -f "containerd-shim-runc-v2 -namespace k8s.io -address $cri_sock" 2>/dev/null || true
  if [ -f "$dir/postgres/data/PG_VERSION" ]; then
    runuser -u postgres -- "$(pg_bin_dir)/pg_ctl" -D "$dir/postgres/data" -m immediate stop >/dev/null 2>&1 || true
  fi
  [ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  # Mounts the kubelet and containerd made under the node's directory, deepest first.
  local mount_point
  for mount_point in $(awk -v d="$dir" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$mount_point" 2>/dev/null || true
  done
  # Network namespaces of pods that were never released (containerd names them cni-…).
  local netns
  for netns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$netns" || true; done
  ip link delete "$bridge" 2>/dev/null || true
  remove_firewall_rules
  remove_cgroups
  restore_sysctls
  rm -rf "$dir"
  log "node removed in $((SECONDS - t0))s"
}

env_() {
  [ -f "$kubeconfig" ] || { log "no node at $dir (scripts/node.sh up)"; exit 1; }
  echo "export KUBECONFIG=$kubeconfig"
  echo "export ARTSTORE_STACK=$dir/stack.json"
  echo "export PATH=$(cat "$dir/bin-dir"):\$PATH"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  env) env_ ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
