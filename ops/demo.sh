#!/usr/bin/env bash
# `make demo`: the main job on the embedded default (the local lab, already up via with-lab.sh).
# Builds runtime + portal through the registry cache, then runs again to show the fresh path.
set -euo pipefail
cd "$(dirname "$0")/.."
bp=.venv/bin/buildplane
topo=ops/infra/topology/local.yaml
. ops/lab/paths.sh

echo "== 1. buildplane up --mode dev (runtime, portal): build what changed, push, helm upgrade --install --wait"
echo "      into the lab cluster, then smoke the routes (they serve the files of the image each release runs)"
time "$bp" --topology "$topo" up --mode dev --json >.buildplane-demo-1.json || { cat .buildplane-demo-1.json; exit 1; }
echo
echo "== 2. the same again: nothing changed, so nothing is built, pushed or released"
time "$bp" --topology "$topo" up --mode dev --json >.buildplane-demo-2.json
.venv/bin/python - <<'PY'
import json
for n in (1, 2):
    s = json.load(open(f".buildplane-demo-{n}.json"))
    print(f"run {n}: {s['outcome']} in {s['duration_s']}s")
    for name, t in s["targets"].items():
        c = t["cache"]
        print(f"  {name:8} build={t['build']:6} release={t['release']:8} cache {c['cached_steps']}/{c['total_steps']} steps  {t['image']}")
        print(f"  {'':8} digest {t['digest']}")
PY
rm -f .buildplane-demo-1.json .buildplane-demo-2.json
echo
echo "Where things live:"
eval "$("$bp" env "$topo" --mode dev)"
echo "  images     $BUILDPLANE_IMAGE_RUNTIME, $BUILDPLANE_IMAGE_PORTAL (final registry, htpasswd auth)"
echo "  cache      $BUILDPLANE_CACHE_REF_RUNTIME, $BUILDPLANE_CACHE_REF_PORTAL"
echo "  mirror     $BUILDPLANE_REGISTRY_MIRROR/library/busybox:1.35 (base image)"
echo "  releases   helm releases fractalops-runtime, fractalops-portal in $BUILDPLANE_NAMESPACE on the lab cluster ($KUBECONFIG)"
echo "  builder    $DOCKER_HOST (lab dir $BP_LAB_DIR)"
echo
echo "Is what runs what the tree builds? (buildplane status)"
"$bp" --topology "$topo" status runtime portal
echo
echo "The pods the releases run, read from the cluster (buildplane status --pods):"
"$bp" --topology "$topo" status --pods runtime portal
echo
echo "Cache hit ratios and step durations so far (buildplane events stats):"
"$bp" --topology "$topo" events stats
