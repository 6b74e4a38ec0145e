"""Real Helm (from the lab's bin dir): lint and template both charts; rendered manifests are valid
Kubernetes objects and pin the image by digest (marker `real`)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from conftest import ROOT, missing_component

pytestmark = pytest.mark.real
DIGEST = "sha256:" + "0f" * 32
REPO = "ghcr.io/yamonco/fractalops-runtime"
LAB_BIN = Path.home() / ".cache/buildplane/lab/bin"


@pytest.fixture(scope="module")
def helm() -> str:
    found = shutil.which("helm") or (str(LAB_BIN / "helm") if (LAB_BIN / "helm").exists() else None)
    if not found:
        missing_component("helm not found: run `make provision`")
    return found


def template(helm: str, chart: str, *values: str, extra: tuple[str, ...] = ()) -> list[dict]:
    argv = [helm, "template", "rel", str(ROOT / "charts" / chart), "--namespace", "fractalops-dev"]
    for v in values:
        argv += ["-f", str(ROOT / "charts" / chart / v)]
    argv += ["--set", f"image.repository={REPO}", "--set", f"image.digest={DIGEST}", *extra]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("chart", ["fractalops-runtime", "fractalops-portal"])
def test_helm_lint_is_clean(helm, chart):
    out = subprocess.run([helm, "lint", "--strict", str(ROOT / "charts" / chart), "--set", f"image.repository={REPO}",
                          "--set", f"image.digest={DIGEST}"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("chart,values", [("fractalops-runtime", "values-dev.yaml"), ("fractalops-runtime", "values-staging.yaml"),
                                          ("fractalops-runtime", "values-worker.yaml"), ("fractalops-runtime", "values-agent-server.yaml"),
                                          ("fractalops-portal", "values-dev.yaml"), ("fractalops-portal", "values-staging.yaml")])
def test_rendered_manifests_are_valid_kubernetes(helm, chart, values):
    docs = template(helm, chart, values)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert c["image"] == f"{REPO}@{DIGEST}"


def _hpas(docs):
    return {d["metadata"]["name"]: (d["spec"]["minReplicas"], d["spec"]["maxReplicas"])
            for d in docs if d["kind"] == "HorizontalPodAutoscaler"}


def test_runtime_components_are_switchable_with_their_hpas(helm):
    docs = template(helm, "fractalops-runtime", extra=("--set", "agentServer.enabled=true"))
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert {("Deployment", "fractalops-api"), ("Deployment", "fractalops-worker"),
            ("Deployment", "fractalops-agent-server")} <= set(kinds)
    assert _hpas(docs) == {"fractalops-api": (2, 6), "fractalops-worker": (1, 4)}
    only_worker = template(helm, "fractalops-runtime", "values-worker.yaml")
    assert [d["metadata"]["name"] for d in only_worker if d["kind"] == "Deployment"] == ["fractalops-worker"]
    # An empty prefix names the workloads after the release, for a second copy beside the canonical one.
    by_release = template(helm, "fractalops-runtime", extra=("--set", "namePrefix="))
    assert _hpas(by_release) == {"rel-api": (2, 6), "rel-worker": (1, 4)}


def test_lxc_pve_lab_releases_carry_the_documents_workload_names(helm, monkeypatch):
    """Rendered with the lxc-pve-lab topology's release names and values files, the Deployments and HPAs
    are the FractalOps document's (and Argo CD's app) names: fractalops-api 2-6, -portal 1-4, -worker 1-4."""
    from buildplane.contract import release_name
    from buildplane.topology import load

    monkeypatch.chdir(ROOT)
    topo = load("ops/infra/topology/lxc-pve-lab.yaml")
    deployments, hpas = set(), {}
    for name in ("runtime", "portal", "worker"):
        t = topo.targets[name]
        argv = [helm, "template", release_name(topo, name), t.chart, "--namespace", topo.modes.dev.namespace]
        for v in t.values:
            argv += ["-f", v]
        argv += ["--set", f"image.repository={REPO}", "--set", f"image.digest={DIGEST}"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        deployments |= {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
        hpas.update(_hpas(docs))
    assert deployments == {"fractalops-api", "fractalops-portal", "fractalops-worker"}
    assert hpas == {"fractalops-api": (2, 6), "fractalops-portal": (1, 4), "fractalops-worker": (1, 4)}
    assert set(topo.modes.deploy.argo.apps) == deployments


def test_portal_hpa(helm):
    assert _hpas(template(helm, "fractalops-portal")) == {"rel": (1, 4)}


def test_values_schema_rejects_a_bad_value(helm):
    out = subprocess.run([helm, "template", "rel", str(ROOT / "charts/fractalops-portal"), "--set", f"image.repository={REPO}",
                          "--set", f"image.digest={DIGEST}", "--set", "autoscaling.maxReplicas=many"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "maxReplicas" in out.stderr


def test_a_tag_instead_of_a_digest_is_refused(helm):
    out = subprocess.run([helm, "template", "rel", str(ROOT / "charts/fractalops-portal"), "--set", f"image.repository={REPO}",
                          "--set", "image.digest=latest"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "image.digest must be sha256" in out.stderr


def test_a_rolled_back_release_is_read_from_helms_own_status_json():
    """Saved from helm 4.1.4 on the lab cluster: an upgrade that timed out under --rollback-on-failure."""
    from buildplane.tools.manifests import release_status, rolled_back_to
    text = (Path(__file__).parent / "fixtures/helm-status-rolled-back.json").read_text()
    assert release_status(text) == ("deployed", 3)
    assert rolled_back_to(text) == 1
    assert rolled_back_to(text.replace("Rollback to 1", "Upgrade complete")) is None
    assert rolled_back_to("not json") is None
