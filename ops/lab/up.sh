#!/usr/bin/env bash
# Brings up the local build plane on loopback: containerd + dockerd (containerd image store,
# so buildx can export registry cache), three real registries — final (htpasswd auth) :15001,
# cache :15002, mirror :15003 (seeded with an offline busybox base image) — and a Kubernetes cluster
# (real API server, controller manager, scheduler, etcd; KWOK nodes) with its routes (ops/lab/cluster.sh).
# Idempotent: what already runs is left alone. Every PID it starts is recorded under
# $BP_LAB_RUN/pids; `down.sh` stops exactly those.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/paths.sh"

log() { printf 'lab: %s\n' "$*" >&2; }
[ -x "$BP_LAB_BIN/dockerd" ] || { echo "lab: builder binaries missing under $BP_LAB_BIN; run ops/lab/provision.sh (make provision)" >&2; exit 4; }
command -v docker-registry >/dev/null || { echo "lab: docker-registry missing; run ops/lab/provision.sh" >&2; exit 4; }

mkdir -p "$BP_LAB_RUN/pids" "$BP_LAB_DIR/secrets" "$BP_LAB_DIR/docker-config/cli-plugins"
chmod 700 "$BP_LAB_DIR/secrets"
export PATH="$BP_LAB_BIN:/usr/sbin:/sbin:$PATH"

alive() { local f="$BP_LAB_RUN/pids/$1.pid"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

start() {  # start NAME LOGFILE CMD... : background it, record its PID
  local name=$1 logf=$2; shift 2
  if alive "$name"; then log "$name already running (pid $(cat "$BP_LAB_RUN/pids/$name.pid"))"; return; fi
  setsid "$@" >"$logf" 2>&1 < /dev/null &
  echo $! >"$BP_LAB_RUN/pids/$name.pid"
  log "started $name (pid $!)"
}

wait_for() {  # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "lab: $what did not come up within ${secs}s (logs in $BP_LAB_RUN)" >&2; exit 1
}

# --- containerd + dockerd: the workstation's builder, and a "remote" build worker -------------
# daemon SUFFIX DIR [DOCKERD ARGS…]: a containerd + dockerd pair (containerd image store, so buildx exports
# registry cache) with its sockets under DIR; PIDs recorded as containerd$SUFFIX / dockerd$SUFFIX.
daemon() {
  local suffix=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
EOF
  start "containerd$suffix" "$dir/containerd.log" "$BP_LAB_BIN/containerd" --config "$dir/containerd.toml"
  wait_for "containerd$suffix" 20 test -S "$dir/containerd.sock"
  echo '{"features": {"containerd-snapshotter": true}}' >"$dir/daemon.json"
  start "dockerd$suffix" "$dir/dockerd.log" "$BP_LAB_BIN/dockerd" --containerd "$dir/containerd.sock" \
    --data-root "$dir/docker" --exec-root "$dir/dx" -H "unix://$dir/docker.sock" \
    --iptables=false --ip6tables=false --bridge=none --pidfile "$dir/dockerd.pidfile" \
    --config-file "$dir/daemon.json" "$@"
}
daemon "" "$BP_LAB_RUN"
# The shared build worker (#17): a second daemon, reached as the Docker context `bp-worker` over TCP —
# what a workstation sees of a remote build host (buildplane tells a remote builder by its endpoint and
# lets it push itself). Loopback only, and plain TCP: a lab, not a network service.
WORKER_TCP=127.0.0.1:15004
daemon "-worker" "$BP_LAB_RUN/worker" -H "tcp://$WORKER_TCP" --tls=false
export DOCKER_HOST="unix://$BP_LAB_RUN/docker.sock" DOCKER_CONFIG="$BP_LAB_DIR/docker-config"
ln -sf "$BP_LAB_BIN/docker-buildx" "$DOCKER_CONFIG/cli-plugins/docker-buildx"
wait_for dockerd 60 docker info
wait_for dockerd-worker 60 docker -H "unix://$BP_LAB_RUN/worker/docker.sock" info
if docker context inspect bp-worker >/dev/null 2>&1; then
  docker context update bp-worker --docker "host=tcp://$WORKER_TCP" >/dev/null
else
  docker context create bp-worker --description "buildplane lab: the shared build worker" \
    --docker "host=tcp://$WORKER_TCP" >/dev/null
fi

# --- registries ------------------------------------------------------------------------------
pwfile="$BP_LAB_DIR/secrets/final.password"
[ -s "$pwfile" ] || { python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$pwfile"; chmod 600 "$pwfile"; }
[ -s "$BP_LAB_DIR/secrets/htpasswd" ] || htpasswd -iBc "$BP_LAB_DIR/secrets/htpasswd" buildplane <"$pwfile" 2>/dev/null

registry() {  # registry NAME PORT AUTH(yes|no)
  local name=$1 port=$2 auth=$3 dir="$BP_LAB_RUN/registry-$1"
  mkdir -p "$dir/data"
  {
    printf 'version: 0.1\nlog: {level: warn}\n'
    printf 'storage:\n  filesystem: {rootdirectory: %s}\n  delete: {enabled: true}\n' "$dir/data"
    printf 'http:\n  addr: 127.0.0.1:%s\n  secret: %s\n' "$port" "lab-$name"
    [ "$auth" = yes ] && printf 'auth:\n  htpasswd: {realm: buildplane-lab, path: %s}\n' "$BP_LAB_DIR/secrets/htpasswd"
  } >"$dir/config.yml"
  start "registry-$name" "$dir/registry.log" docker-registry serve "$dir/config.yml"
  wait_for "registry $name" 20 python3 -c "import urllib.request,urllib.error,sys
try: urllib.request.urlopen('http://127.0.0.1:$port/v2/', timeout=1)
except urllib.error.HTTPError as e: sys.exit(0 if e.code == 401 else 1)"
}
registry final 15001 yes
registry cache 15002 no
registry mirror 15003 no

docker login 127.0.0.1:15001 -u buildplane --password-stdin <"$pwfile" >/dev/null

# --- the cluster: real control plane + KWOK nodes (ops/lab/cluster.sh), and its routes -----------
# shellcheck source=ops/lab/cluster.sh
. "$here/cluster.sh"
export KUBECONFIG="$KUBECONFIG_LAB"
# What an ingress in front of the dev namespace would serve: the files of the image each release runs.
export BP_LAB_CONTAINER_LOGS=$CONTAINER_LOGS
start routes "$CL/logs/routes.log" python3 "$here/routes.py" "$KUBECONFIG_LAB" \
  18080=fractalops-dev/fractalops-runtime/fractalops-api:/app/api/www \
  18081=fractalops-dev/fractalops-portal/portal:/srv/www

# --- the OpenTelemetry Collector: OTLP/HTTP in, the file exporter out ------------------------------
OTELCOL_BIN=$("$here/go/build.sh" otelcol)
mkdir -p "$BP_LAB_DIR/telemetry"
export BP_LAB_COLLECTOR_FILE="$BP_LAB_DIR/telemetry/otel-logs.jsonl"
start otelcol "$BP_LAB_DIR/telemetry/otelcol.log" "$OTELCOL_BIN/otelcol" --config "$here/collector.yaml"
wait_for otelcol 30 python3 -c "import socket; socket.create_connection(('127.0.0.1', 14318), timeout=1).close()"

# --- seed the mirror with an offline base image ----------------------------------------------
if ! python3 -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:15003/v2/library/busybox/manifests/1.35', method='HEAD', headers={'Accept': 'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json'}), timeout=2)" 2>/dev/null; then
  seed=$(mktemp -d)
  cp /bin/busybox "$seed/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$seed/Dockerfile"
  log "seeding mirror with library/busybox:1.35 (from Debian's busybox-static)"
  docker buildx build --progress quiet --network host --push -t 127.0.0.1:15003/library/busybox:1.35 "$seed" >/dev/null
  rm -rf "$seed"
fi

# The environment every lab user needs (sourced by make; read by tests as JSON).
cat >"$BP_LAB_DIR/env.sh" <<EOF
export DOCKER_HOST=$DOCKER_HOST
export DOCKER_CONFIG=$DOCKER_CONFIG
export PATH=$BP_LAB_BIN:\$PATH
export KUBECONFIG=$KUBECONFIG_LAB
EOF
python3 - "$BP_LAB_DIR" "$OTELCOL_BIN/otelcol" <<'PY'
import json, sys
lab = sys.argv[1]
json.dump({"DOCKER_HOST": f"unix://{lab}/run/docker.sock", "DOCKER_CONFIG": f"{lab}/docker-config", "bin": f"{lab}/bin",
           "final": "127.0.0.1:15001", "cache": "127.0.0.1:15002", "mirror": "127.0.0.1:15003",
           "final_user": "buildplane", "final_password_file": f"{lab}/secrets/final.password",
           "pids": f"{lab}/run/pids", "worker_context": "bp-worker",
           "worker_docker_host": "tcp://127.0.0.1:15004",
           "kubeconfig": f"{lab}/cluster/kubeconfig", "kube_context": "buildplane-lab",
           "kube_context_restricted": "buildplane-lab-dev", "api_server": "https://127.0.0.1:16443",
           "otlp_endpoint": "http://127.0.0.1:14318", "collector_file": f"{lab}/telemetry/otel-logs.jsonl",
           "otelcol": sys.argv[2]},
          open(f"{lab}/env.json", "w"), indent=2)
PY
log "up: final 127.0.0.1:15001 (auth), cache 127.0.0.1:15002, mirror 127.0.0.1:15003; builder $DOCKER_HOST; worker context bp-worker"
log "up: OpenTelemetry Collector http://127.0.0.1:14318 (file exporter: $BP_LAB_COLLECTOR_FILE)"
log "up: cluster https://127.0.0.1:$API_PORT (contexts buildplane-lab, buildplane-lab-dev in $KUBECONFIG_LAB); routes :18080 :18081"
