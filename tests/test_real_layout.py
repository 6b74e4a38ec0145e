"""The layout push is idempotent, on the lab's real builder (buildx writes the OCI layout) and a real
registry: a retry after a 5xx, an identical rebuild, the same image to another repository, and a layout a
killed build left half-written all end with the image pushed and a layout holding just that image."""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from lab import final_auth, lab_env, make_app, process_env
from registry_proxy import RegistryProxy
from test_real_build import ACCEPT, up

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def lab():
    return lab_env()


def layout(app: Path) -> Path:
    return app / ".buildplane/layouts/dev-portal"


def index_digests(app: Path) -> list[str]:
    return [m["digest"] for m in json.loads((layout(app) / "index.json").read_text())["manifests"]]


def registry_digest(lab: dict, ref: str) -> str | None:
    host, rest = ref.split("/", 1)
    repo, tag = rest.rsplit(":", 1)
    resp = httpx.head(f"http://{lab['final']}/v2/{repo}/manifests/{tag}", auth=final_auth(lab),
                      headers={"Accept": ACCEPT}, timeout=10)
    return resp.headers.get("docker-content-digest") if resp.status_code == 200 else None


def blobs_on_disk(app: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (layout(app) / "blobs/sha256").iterdir()}


def test_a_retry_after_a_500_on_the_freshness_check_builds_the_same_image_and_pushes_it(lab, tmp_path):
    with RegistryProxy(lab["final"], auth=final_auth(lab)) as proxy:
        app, _ = make_app(tmp_path / "app", lab, final=f"{proxy.address}/{uuid.uuid4().hex[:10]}", cache=False)
        res, first = up(app, lab, "portal")
        assert res.code == 0, res.err
        shutil.rmtree(app / ".buildplane/state")  # this machine forgets: the next run asks the registry
        proxy.fail("HEAD", r"/manifests/bp-", 500, times=1)
        res, second = up(app, lab, "portal")
    assert res.code == 0, res.err  # was: "2 manifests with digest sha256:… in index.json"
    assert second["targets"]["portal"]["digest"] == first["targets"]["portal"]["digest"]
    assert index_digests(app) == [second["targets"]["portal"]["digest"]]


def test_identical_rebuilds_leave_a_layout_holding_exactly_the_pushed_image(lab, tmp_path):
    app, _ = make_app(tmp_path / "app", lab, cache=False)
    digests = []
    for _ in range(3):
        res, summary = up(app, lab, "portal", "--force")
        assert res.code == 0, res.err
        t = summary["targets"]["portal"]
        assert t["build"] == "built" and t["push"] == "layout"
        digests.append(t["digest"])
        assert index_digests(app) == [t["digest"]]
        manifest = json.loads((layout(app) / "blobs/sha256" / t["digest"].split(":")[1]).read_text())
        assert blobs_on_disk(app) == {t["digest"], manifest["config"]["digest"],
                                      *(layer["digest"] for layer in manifest["layers"])}
    assert len(set(digests)) == 1
    assert registry_digest(lab, t["image"]) == digests[0]


def test_the_same_image_pushed_to_another_repository_is_complete_there(lab, tmp_path):
    app, _ = make_app(tmp_path / "app", lab, cache=False)
    res, first = up(app, lab, "portal")
    assert res.code == 0, res.err
    topo = app / "topology.yaml"
    old = first["targets"]["portal"]["image"].rsplit("/fractalops-portal", 1)[0]
    moved = f"{lab['final']}/moved{uuid.uuid4().hex[:8]}"
    topo.write_text(topo.read_text().replace(old, moved))  # a team moving its final registry path
    res, second = up(app, lab, "portal")
    assert res.code == 0, res.err
    t = second["targets"]["portal"]
    assert t["image"].startswith(moved) and t["digest"] == first["targets"]["portal"]["digest"]
    # Every blob the manifest names is in the new repository (nothing assumed from the old one's push).
    repo = t["image"].split("/", 1)[1].rsplit(":", 1)[0]
    manifest = httpx.get(f"http://{lab['final']}/v2/{repo}/manifests/{t['digest']}", auth=final_auth(lab),
                         headers={"Accept": ACCEPT}, timeout=10).json()
    for digest in [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]:
        head = httpx.head(f"http://{lab['final']}/v2/{repo}/blobs/{digest}", auth=final_auth(lab), timeout=10)
        assert head.status_code == 200, digest


@pytest.mark.parametrize("damage", ["marked", "short-blob"])
def test_a_half_written_layout_is_written_anew_never_pushed(lab, tmp_path, damage):
    app, _ = make_app(tmp_path / "app", lab, cache=False)
    res, first = up(app, lab, "portal")
    assert res.code == 0, res.err
    digest = first["targets"]["portal"]["digest"]
    manifest = json.loads((layout(app) / "blobs/sha256" / digest.split(":")[1]).read_text())
    biggest = max(manifest["layers"], key=lambda layer: layer["size"])
    blob = layout(app) / "blobs/sha256" / biggest["digest"].split(":")[1]
    blob.write_bytes(blob.read_bytes()[: biggest["size"] // 2])  # buildx (or `up`) killed mid-export
    if damage == "marked":
        (layout(app) / ".writing").write_text("12345")  # what a killed build leaves
    res, again = up(app, lab, "portal", "--force")
    assert res.code == 0, res.err
    said = "left half-written by a build that was stopped" if damage == "marked" else "is damaged: blob"
    assert said in res.err, res.err
    assert again["targets"]["portal"]["digest"] == digest
    assert blob.stat().st_size == biggest["size"]
    assert not (layout(app) / ".writing").exists()
    # What the registry has is whole: the layer's bytes hash to its digest.
    repo = again["targets"]["portal"]["image"].split("/", 1)[1].rsplit(":", 1)[0]
    got = httpx.get(f"http://{lab['final']}/v2/{repo}/blobs/{biggest['digest']}", auth=final_auth(lab),
                    timeout=30, follow_redirects=True)
    import hashlib
    assert "sha256:" + hashlib.sha256(got.content).hexdigest() == biggest["digest"]
