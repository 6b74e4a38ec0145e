#!/usr/bin/env bash
# The lab's Kubernetes cluster: a real control plane (etcd, kube-apiserver with RBAC, controller manager,
# scheduler) and KWOK for its nodes and pods, all plain processes on loopback. Sourced by up.sh after its
# helpers (`start`, `wait_for`, `log`); every PID is recorded beside the others, and down.sh stops them.
#
# Context `buildplane-lab` is the cluster admin; `buildplane-lab-dev` is a user whose RBAC allows what Helm needs in the
# dev namespace and nothing else (the tests of what buildplane says when it may not read something).
# Certificates are made once with openssl under $BP_LAB_DIR/cluster/pki and kept.

KUBE_BIN=$("$here/go/build.sh" kube)
KWOK_BIN=$("$here/go/build.sh" kwok)
CL="$BP_LAB_DIR/cluster"
PKI="$CL/pki"
API_PORT=16443
ETCD_PORT=15379
KWOK_PORT=15250
export KUBECONFIG_LAB="$CL/kubeconfig"
mkdir -p "$PKI" "$CL/etcd" "$CL/logs"
chmod 700 "$PKI"

cert() {  # cert NAME CN [O] [SAN]: a key and a certificate signed by the lab CA
  local name=$1 cn=$2 org=${3:-} san=${4:-}
  [ -s "$PKI/$name.crt" ] && return
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ext"
  [ -n "$san" ] && printf 'subjectAltName=%s\n' "$san" >>"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  chmod 600 "$PKI/$name.key"
}

if [ ! -s "$PKI/ca.crt" ]; then
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -subj "/CN=buildplane-lab-ca" \
    -days 3650 -sha256 -out "$PKI/ca.crt" 2>/dev/null
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
cert apiserver kube-apiserver "" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:10.96.0.1"
cert apiserver-kubelet kube-apiserver-kubelet-client system:masters
cert admin bp-admin system:masters
cert controller-manager system:kube-controller-manager
cert scheduler system:kube-scheduler
cert kwok kwok-controller system:masters
cert kwok-serving kwok-node "" "DNS:localhost,IP:127.0.0.1"
cert dev bp-dev

kubeconfig() {  # kubeconfig FILE CONTEXT USER-CERT [CONTEXT USER-CERT]…: one file, client certificates embedded
  local file=$1; shift
  local k=("$BP_LAB_BIN/kubectl" --kubeconfig "$file")
  "${k[@]}" config set-cluster bp-lab --server "https://127.0.0.1:$API_PORT" --certificate-authority "$PKI/ca.crt" --embed-certs >/dev/null
  while [ $# -gt 0 ]; do
    "${k[@]}" config set-credentials "$1" --client-certificate "$PKI/$2.crt" --client-key "$PKI/$2.key" --embed-certs >/dev/null
    "${k[@]}" config set-context "$1" --cluster bp-lab --user "$1" >/dev/null
    shift 2
  done
  chmod 600 "$file"
}
kubeconfig "$KUBECONFIG_LAB" buildplane-lab admin buildplane-lab-dev dev
"$BP_LAB_BIN/kubectl" --kubeconfig "$KUBECONFIG_LAB" config use-context buildplane-lab >/dev/null
kubeconfig "$CL/controller-manager.kubeconfig" default controller-manager
"$BP_LAB_BIN/kubectl" --kubeconfig "$CL/controller-manager.kubeconfig" config use-context default >/dev/null
kubeconfig "$CL/scheduler.kubeconfig" default scheduler
"$BP_LAB_BIN/kubectl" --kubeconfig "$CL/scheduler.kubeconfig" config use-context default >/dev/null
kubeconfig "$CL/kwok.kubeconfig" default kwok
"$BP_LAB_BIN/kubectl" --kubeconfig "$CL/kwok.kubeconfig" config use-context default >/dev/null

start etcd "$CL/logs/etcd.log" "$BP_LAB_BIN/etcd" --name bp-lab --data-dir "$CL/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
  --initial-cluster "bp-lab=http://127.0.0.1:$((ETCD_PORT + 1))" --listen-metrics-urls "" --log-level warn
wait_for etcd 30 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$ETCD_PORT/health', timeout=1)"

start kube-apiserver "$CL/logs/kube-apiserver.log" "$KUBE_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --secure-port "$API_PORT" --cert-dir "$CL/apiserver-certs" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" --client-ca-file "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet.crt" --kubelet-client-key "$PKI/apiserver-kubelet.key" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode Node,RBAC --allow-privileged=true --enable-priority-and-fairness=false \
  --profiling=false --v 1
wait_for kube-apiserver 90 "$BP_LAB_BIN/kubectl" --kubeconfig "$KUBECONFIG_LAB" get --raw /readyz

start kube-controller-manager "$CL/logs/kube-controller-manager.log" "$KUBE_BIN/kube-controller-manager" \
  --kubeconfig "$CL/controller-manager.kubeconfig" --authentication-kubeconfig "$CL/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$CL/controller-manager.kubeconfig" --bind-address 127.0.0.1 --secure-port 16444 \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" --use-service-account-credentials \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller' \
  --leader-elect=false --profiling=false
start kube-scheduler "$CL/logs/kube-scheduler.log" "$KUBE_BIN/kube-scheduler" \
  --kubeconfig "$CL/scheduler.kubeconfig" --authentication-kubeconfig "$CL/scheduler.kubeconfig" \
  --authorization-kubeconfig "$CL/scheduler.kubeconfig" --bind-address 127.0.0.1 --secure-port 16445 \
  --leader-elect=false --profiling=false

# KWOK: its own stages (shipped in its module, copied beside the binary by build.sh), and a kubelet-style
# server on loopback that the API server reaches for `logs` (content from Logs / ClusterLogs objects).
kwok_conf="$CL/kwok.yaml"
{
  printf 'apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n'
  printf '  enableCRDs: [Logs, ClusterLogs]\n  nodeLeaseDurationSeconds: 40\n'
  # The controller alone does not default these (kwokctl does); a 0 stops it at start.
  printf '  enableDebuggingHandlers: true\n'  # the kubelet-style /containerLogs the API server proxies logs to
  printf '  nodeLeaseParallelism: 4\n  podPlayStageParallelism: 4\n  nodePlayStageParallelism: 4\n  podsOnNodeSyncParallelism: 1\n'
  for f in "$KWOK_BIN"/stages/*.yaml; do printf -- '---\n'; cat "$f"; done
} >"$kwok_conf"
"$BP_LAB_BIN/kubectl" --kubeconfig "$KUBECONFIG_LAB" apply --server-side -f "$KWOK_BIN/crds" >/dev/null
start kwok "$CL/logs/kwok.log" "$KWOK_BIN/kwok" --kubeconfig "$CL/kwok.kubeconfig" --config "$kwok_conf" \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake --node-ip 127.0.0.1 --node-port "$KWOK_PORT" \
  --server-address "127.0.0.1:$KWOK_PORT" --tls-cert-file "$PKI/kwok-serving.crt" --tls-private-key-file "$PKI/kwok-serving.key" \
  --cidr 10.244.0.0/24
"$BP_LAB_BIN/kubectl" --kubeconfig "$KUBECONFIG_LAB" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: bp-lab-node
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: bp-lab-node, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
wait_for "the KWOK node" 60 sh -c "'$BP_LAB_BIN/kubectl' --kubeconfig '$KUBECONFIG_LAB' get node bp-lab-node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"

# The namespaces the topology's modes release into, and the restricted user's rights: what Helm needs for
# a release in the dev namespace, nothing anywhere else (not even reading pods in staging).
"$BP_LAB_BIN/kubectl" --kubeconfig "$KUBECONFIG_LAB" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: fractalops-dev}
---
apiVersion: v1
kind: Namespace
metadata: {name: fractalops-staging}
---
apiVersion: v1
kind: Namespace
metadata: {name: fractalops}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: helm-release, namespace: fractalops-dev}
rules:
- apiGroups: ["", apps, autoscaling, policy, networking.k8s.io]
  resources: [secrets, configmaps, services, serviceaccounts, deployments, replicasets, horizontalpodautoscalers, poddisruptionbudgets, ingresses]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bp-dev-helm-release, namespace: fractalops-dev}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: helm-release}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: bp-dev}]
YAML

# What `kubectl logs` (and `buildplane logs`) reads for a pod in the dev namespace: KWOK serves these
# CRI-format files; the routes write each request they serve to their release's container's file.
CONTAINER_LOGS="$CL/logs/containers"
mkdir -p "$CONTAINER_LOGS"
for c in fractalops-api portal default; do
  [ -s "$CONTAINER_LOGS/$c.log" ] || printf '%s stdout F %s: started (lab)\n' "$(date -u +%Y-%m-%dT%H:%M:%S.000000000Z)" "$c" >"$CONTAINER_LOGS/$c.log"
done
"$BP_LAB_BIN/kubectl" --kubeconfig "$KUBECONFIG_LAB" apply -f - >/dev/null <<YAML
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata: {name: lab-containers}
spec:
  selector: {}  # every namespace (the tests release into their own)
  logs:
  - {containers: [fractalops-api], logsFile: $CONTAINER_LOGS/fractalops-api.log, follow: true}
  - {containers: [portal], logsFile: $CONTAINER_LOGS/portal.log, follow: true}
  - {logsFile: $CONTAINER_LOGS/default.log}
YAML
