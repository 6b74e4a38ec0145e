#!/usr/bin/env bash
# Builds one of the lab's real components from the Go module proxy, once per version:
#   build.sh kube | kwok | otelcol
# Each component has a helper module beside this script (its go.mod pins the release, with the
# release's own replace lines where it has them). The binaries go to $BP_LAB_BIN/NAME-VERSION/,
# a directory that is complete or absent: the build writes into a temporary one and renames it.
# A build already made for that version is reused at once. A cold build shows what it is doing
# and why, since it can take minutes on a 2-core machine.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=ops/lab/paths.sh
. "$here/../paths.sh"

name=${1:?usage: build.sh kube|kwok|otelcol|argocd}
mod="$here/$name"
[ -f "$mod/go.mod" ] || { echo "build.sh: no helper module $mod" >&2; exit 2; }
# A module that asks for a newer Go than the machine has names the toolchain the proxy serves.
want_go=$(awk '$1=="toolchain" {print $2}' "$mod/go.mod")
[ -n "$want_go" ] && export GOTOOLCHAIN=$want_go
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOPROXY=${GOPROXY:-$(go env GOPROXY)}

# what: the module whose version names the build; pkgs: the commands; ldflags: version stamps.
case $name in
  kube)
    what=k8s.io/kubernetes
    pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
    why="the lab's Kubernetes control plane (API server, controller manager, scheduler)"
    ;;
  kwok)
    what=sigs.k8s.io/kwok
    pkgs=(sigs.k8s.io/kwok/cmd/kwok)
    why="KWOK, the lab cluster's simulated nodes and pods"
    ;;
  otelcol)
    what=go.opentelemetry.io/collector/cmd/builder
    pkgs=(go.opentelemetry.io/collector/cmd/builder)
    why="the lab's OpenTelemetry Collector (OTLP receiver, batch, file and ClickHouse exporters)"
    ;;
  argocd)
    what=github.com/argoproj/argo-cd/v3
    pkgs=(github.com/argoproj/argo-cd/v3/cmd)
    why="Argo CD (server, repo-server, application-controller) for deploy mode against the real thing"
    ;;
  *) echo "build.sh: unknown component $name (kube, kwok, otelcol or argocd)" >&2; exit 2 ;;
esac
version=$(awk -v m="$what" '$1==m {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$mod/go.mod")
[ -n "$version" ] || { echo "build.sh: $mod/go.mod does not require $what" >&2; exit 2; }

# Keyed by version and by the recipe (go.mod, go.sum, a manifest): a changed recipe builds anew.
recipe_files=("$mod/go.mod" "$mod/go.sum")
[ -f "$mod/manifest.yaml" ] && recipe_files+=("$mod/manifest.yaml")
recipe=$(cat "${recipe_files[@]}" | sha256sum | cut -c1-8)
out="$BP_LAB_BIN/$name-$version-$recipe"
if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi

ldflags="-s -w"
if [ "$name" = kube ]; then
  # Unstamped builds report v0.0.0-master, which Helm and kubectl misread as an ancient server.
  minor=$(echo "$version" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
fi

if [ "$name" = argocd ]; then
  ldflags+=" -X github.com/argoproj/argo-cd/v3/common.version=${version#v} -X github.com/argoproj/argo-cd/v3/common.gitTreeState=clean"
fi

started=$(date +%s)
printf 'lab: building %s %s from the Go module proxy: %s.\n' "$name" "$version" "$why" >&2
printf 'lab: a one-time build for this version (minutes on 2 cores); later runs reuse %s\n' "$out" >&2
tmp="$out.partial.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
# go build -v names each package as it compiles: a count every 100 shows the build is moving;
# anything else it prints (an error) passes through.
progress() {
  local n=0 line
  while IFS= read -r line; do
    if [[ $line =~ ^[A-Za-z0-9._/~-]+$ ]]; then
      n=$((n + 1))
      (( n % 100 == 0 )) && printf 'lab: %s: %d packages compiled (%ss)\n' "$1" "$n" "$(( $(date +%s) - started ))" >&2
    else
      printf '%s\n' "$line" >&2
    fi
  done
  return 0
}
cd "$mod"
go mod download >&2
for pkg in "${pkgs[@]}"; do
  bin=$(basename "$pkg")
  [ "$name" = argocd ] && bin=argocd  # one binary that acts by its name (ARGOCD_BINARY_NAME)
  # -v names each package as it is compiled: a count every 100 shows the build is moving.
  go build -v -trimpath -ldflags "$ldflags" -o "$tmp/$bin" "$pkg" 2>&1 | progress "$bin"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "lab: go build $pkg failed" >&2; exit 1; }
  [ -x "$tmp/$bin" ] || { echo "lab: go build $pkg wrote no binary" >&2; exit 1; }
done
if [ "$name" = otelcol ]; then
  # The Builder writes the Collector's main module from manifest.yaml, then compiles it.
  sed "/^dist:/a\\  output_path: $tmp/src" manifest.yaml >"$tmp/manifest.yaml"
  "$tmp/builder" --config "$tmp/manifest.yaml" 2>&1 | sed 's/^/lab: otelcol builder: /' >&2
  [ -x "$tmp/src/otelcol" ] || { echo "lab: the Collector Builder made no binary" >&2; exit 1; }
  mv "$tmp/src/otelcol" "$tmp/otelcol"
  rm -rf "$tmp/src" "$tmp/builder" "$tmp/manifest.yaml"
fi
if [ "$name" = kwok ]; then
  # The kwok controller takes its stages from its config; the module ships KWOK's own as YAML.
  src=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  mkdir -p "$tmp/stages" "$tmp/crds"
  cp "$src/kustomize/crd/bases/kwok.x-k8s.io_logs.yaml" "$src/kustomize/crd/bases/kwok.x-k8s.io_clusterlogs.yaml" "$tmp/crds/"
  for st in node/fast node/heartbeat-with-lease pod/fast; do
    for f in "$src/kustomize/stage/$st"/*.yaml; do
      case $(basename "$f") in kustomization.yaml) continue ;; esac
      cp "$f" "$tmp/stages/${st//\//-}-$(basename "$f")"
    done
  done
fi
printf '%s %s built in %ss\n' "$name" "$version" "$(( $(date +%s) - started ))" >"$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
printf 'lab: %s %s built in %ss\n' "$name" "$version" "$(( $(date +%s) - started ))" >&2
echo "$out"
