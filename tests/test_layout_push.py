"""The layout push (#13): buildx writes the image as an OCI layout on this machine and buildplane pushes it:
each blob once, nothing asked about what the last push put there, the manifest under both tags at once.
Read on a layout real buildx wrote (tests/fixtures/oci-layout-*), pushed to the in-memory registry that
answers as distribution does."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from buildplane.engine import Engine
from buildplane.errors import StepFailed
from buildplane.plan import Options, make_plan
from buildplane.state import StateDir
from buildplane.tools import layout_push
from buildplane.tools.builders import endpoint_is_local
from buildplane.tools.buildx import BuilderInfo
from buildplane.tools.layout_push import blob_path, prune, push, read_layout
from buildplane.tools.registry import RegistryClient
from buildplane.tools.run import Runner
from buildplane.topology import load
from conftest import ROOT
from fakes import run_context
from oci_registry import OciRegistry

FIXTURE = ROOT / "tests/fixtures/oci-layout-buildx"  # `FROM scratch` + two COPYs, buildx 0.29.1, --provenance=false
ATTESTED = ROOT / "tests/fixtures/oci-layout-attested"  # the same with --provenance=true: an index
META = json.loads((ROOT / "tests/fixtures/oci-layout-buildx.metadata.json").read_text())
LOCAL = BuilderInfo(True, "builder default (driver docker)", "docker", (0, 29), local=True)
STATE = StateDir(Path(".buildplane"))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def copy_layout(tmp_path: Path, src: Path = FIXTURE) -> Path:
    dest = tmp_path / "layout"
    shutil.copytree(src, dest)
    return dest


def a_layout_and_a_registry(tmp_path: Path):
    """The in-memory registry, a client on it, a copy of the buildx layout and its image."""
    reg = OciRegistry()
    layout = copy_layout(tmp_path)
    return reg, RegistryClient(client=reg.client), layout, read_layout(layout)


def opened(sessions: layout_push.Sessions) -> layout_push.Sessions:
    """Wait for the sessions to be open, as they are by the time a build ends."""
    for t in sessions._threads:
        t.join()
    return sessions


def edited_layout(src: Path, dest: Path) -> Path:
    """`src` with its last layer replaced by one of other content: what a one-line edit's build writes."""
    shutil.copytree(src, dest)
    index = json.loads((dest / "index.json").read_text())
    manifest = json.loads(blob_path(dest, index["manifests"][0]["digest"]).read_bytes())
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"edited\n"
        info = tarfile.TarInfo("more.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.loads(blob_path(dest, manifest["config"]["digest"]).read_bytes())
    config["rootfs"]["diff_ids"][-1] = sha(raw.getvalue())
    config_bytes = json.dumps(config).encode()
    manifest["layers"][-1] = {**manifest["layers"][-1], "digest": sha(layer), "size": len(layer)}
    manifest["config"] = {**manifest["config"], "digest": sha(config_bytes), "size": len(config_bytes)}
    body = json.dumps(manifest).encode()
    for blob in (layer, config_bytes, body):
        blob_path(dest, sha(blob)).write_bytes(blob)
    index["manifests"][0] = {**index["manifests"][0], "digest": sha(body), "size": len(body)}
    (dest / "index.json").write_text(json.dumps(index))
    return dest


# ---- reading what buildx wrote -------------------------------------------------------------------

def test_read_layout_on_what_buildx_wrote():
    image = read_layout(FIXTURE, META["containerimage.digest"])
    assert image.digest == META["containerimage.digest"] == sha(image.manifest)
    assert image.config.digest == META["containerimage.config.digest"]
    assert image.media_type == "application/vnd.oci.image.manifest.v1+json" and len(image.layers) == 2
    for blob in image.blobs:
        data = blob_path(FIXTURE, blob.digest).read_bytes()
        assert len(data) == blob.size and sha(data) == blob.digest
    assert read_layout(FIXTURE) == image  # without the metadata's digest: the one manifest of the index


def test_an_index_a_missing_blob_or_another_digest_cannot_be_pushed(tmp_path):
    with pytest.raises(StepFailed, match="image.index.v1.json, not one image's"):
        read_layout(ATTESTED)
    layout = copy_layout(tmp_path)
    image = read_layout(layout)
    blob_path(layout, image.layers[1].digest).unlink()
    with pytest.raises(StepFailed, match=f"blob {image.layers[1].digest[:19]} is missing"):
        read_layout(layout)
    with pytest.raises(StepFailed, match="0 manifests with digest sha256:000"):
        read_layout(FIXTURE, "sha256:" + "0" * 64)


# ---- pushing it ------------------------------------------------------------------------------------

def test_each_blob_goes_once_and_the_manifest_under_both_tags_at_once(tmp_path):
    reg, client, layout, image = a_layout_and_a_registry(tmp_path)
    assert push(client, layout, image, "reg.test", "team/api", ["bp-1", "dev-1"]) == image.digest
    assert reg.tags["team/api:bp-1"] == reg.tags["team/api:dev-1"] == image.digest
    assert {b.digest for b in image.blobs} <= set(reg.blobs)
    assert reg.seen.count("POST /v2/team/api/blobs/uploads/") == 3
    assert not [s for s in reg.seen if s.startswith("HEAD")]  # small blobs: sent, not asked about

    reg.seen.clear()  # the same image again: the blobs the last push put there are neither asked about nor sent
    push(client, layout, image, "reg.test", "team/api", ["bp-1", "dev-2"])
    assert sorted(reg.seen) == ["PUT /v2/team/api/manifests/bp-1", "PUT /v2/team/api/manifests/dev-2"]


def test_an_edit_sends_the_new_layer_and_config_only(tmp_path):
    reg = OciRegistry()
    client = RegistryClient(client=reg.client)
    layout = copy_layout(tmp_path)
    push(client, layout, read_layout(layout), "reg.test", "team/api", ["bp-1", "dev-1"])
    shutil.rmtree(layout / "index.json", ignore_errors=True)
    edited = edited_layout(FIXTURE, tmp_path / "edited")
    shutil.copy(layout / layout_push.PUSHED, edited / layout_push.PUSHED)
    image = read_layout(edited)
    reg.seen.clear()
    push(client, edited, image, "reg.test", "team/api", ["bp-2", "dev-2"])
    assert reg.seen.count("POST /v2/team/api/blobs/uploads/") == 2 and reg.tags["team/api:dev-2"] == image.digest
    assert len(reg.seen) == 2 + 2 + 2  # POST and PUT of the layer and the config, two manifest PUTs


def test_sessions_opened_while_building_take_the_new_blobs_with_one_put_each(tmp_path):
    reg = OciRegistry()
    client = RegistryClient(client=reg.client)
    layout = copy_layout(tmp_path)
    push(client, layout, read_layout(layout), "reg.test", "team/api", ["bp-1", "dev-1"])
    edited = edited_layout(FIXTURE, tmp_path / "edited")
    shutil.copy(layout / layout_push.PUSHED, edited / layout_push.PUSHED)
    image = read_layout(edited)
    reg.seen.clear()
    sessions = opened(layout_push.Sessions(client, "reg.test", "team/api", 3))  # one more than the edit needs
    assert reg.seen == ["POST /v2/team/api/blobs/uploads/"] * 3
    reg.seen.clear()
    push(client, edited, image, "reg.test", "team/api", ["bp-2", "dev-2"], sessions)
    puts = [s for s in reg.seen if s.startswith("PUT /v2/team/api/blobs/uploads/")]
    assert len(puts) == 2 and not [s for s in reg.seen if s.startswith("POST")]  # one PUT per new blob
    assert len([s for s in reg.seen if s.startswith("DELETE /v2/team/api/blobs/uploads/")]) == 1  # the unused one
    assert reg.uploads == {} and reg.tags["team/api:dev-2"] == image.digest
    manifests = [s for s in reg.seen if "/manifests/" in s]
    assert manifests == ["PUT /v2/team/api/manifests/bp-2", "PUT /v2/team/api/manifests/dev-2"]  # one after the other


def test_a_session_the_registry_forgot_is_replaced_by_a_new_one(tmp_path):
    reg, client, layout, image = a_layout_and_a_registry(tmp_path)
    sessions = opened(layout_push.Sessions(client, "reg.test", "team/api", 1))
    reg.uploads.clear()  # purged meanwhile (a long build, a registry restart)
    push(client, layout, image, "reg.test", "team/api", ["bp-1"], sessions)
    assert {b.digest for b in image.blobs} <= set(reg.blobs) and reg.tags["team/api:bp-1"] == image.digest


def test_another_repository_is_not_taken_to_have_the_blobs(tmp_path):
    reg, client, layout, image = a_layout_and_a_registry(tmp_path)
    push(client, layout, image, "reg.test", "team/api", ["bp-1"])
    push(client, layout, image, "reg.test", "team/web", ["bp-1"])
    assert reg.seen.count("POST /v2/team/web/blobs/uploads/") == 3 and reg.tags["team/web:bp-1"] == image.digest


def test_a_registry_that_lost_a_blob_pushed_before_gets_it_again(tmp_path):
    reg, client, layout, image = a_layout_and_a_registry(tmp_path)
    push(client, layout, image, "reg.test", "team/api", ["bp-1"])
    del reg.blobs[image.layers[0].digest]  # garbage-collected since
    reg.seen.clear()
    push(client, layout, image, "reg.test", "team/api", ["dev-1"])
    assert image.layers[0].digest in reg.blobs and reg.tags["team/api:dev-1"] == image.digest
    assert reg.seen.count("PUT /v2/team/api/manifests/dev-1") == 2  # refused (MANIFEST_BLOB_UNKNOWN), then taken
    assert len([s for s in reg.seen if s.startswith("HEAD /v2/team/api/blobs/")]) == 3


def test_a_large_blob_not_known_to_be_there_is_asked_about_first(tmp_path, monkeypatch):
    monkeypatch.setattr(layout_push, "ASK_ABOVE", 0)
    reg = OciRegistry()
    layout = copy_layout(tmp_path)
    image = read_layout(layout)
    for blob in image.blobs:  # another run (or machine) pushed the same layers
        reg.blobs[blob.digest] = blob_path(layout, blob.digest).read_bytes()
    push(RegistryClient(client=reg.client), layout, image, "reg.test", "team/api", ["bp-1"])
    assert len([s for s in reg.seen if s.startswith("HEAD")]) == 3 and not [s for s in reg.seen if s.startswith("POST")]


def test_prune_keeps_the_pushed_image_only(tmp_path):
    layout = copy_layout(tmp_path)
    image = read_layout(layout)
    stale = blob_path(layout, "sha256:" + "e" * 64)
    stale.write_bytes(b"an older build's layer")
    prune(layout, image)
    assert not stale.exists()
    assert sorted(p.name for p in (layout / "blobs/sha256").iterdir()) == sorted(
        d.split(":")[1] for d in [image.digest, *(b.digest for b in image.blobs)])


# ---- choosing the way --------------------------------------------------------------------------------

def test_the_push_way_follows_the_builder():
    assert LOCAL.push == "layout"
    assert replace(LOCAL, local=False).push == "buildx"  # a remote builder pushes itself
    assert replace(LOCAL, local=False, version=(0, 13)).push == "docker-push"
    assert replace(LOCAL, registry_cache=False, version=(0, 13)).push == "docker-push"  # no OCI export there
    assert BuilderInfo.from_json(LOCAL.to_json()) == LOCAL
    old = {k: v for k, v in LOCAL.to_json().items() if k != "local"}
    assert BuilderInfo.from_json(old) is None  # a record from before: the builder is asked again


def test_which_endpoints_are_on_this_machine(tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path)}
    for name, host in (("near", "unix:///run/user/1000/docker.sock"), ("far", "ssh://builder@ci-7"),
                       ("tcp", "tcp://10.0.0.7:2376")):
        meta = tmp_path / "contexts/meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host}}}))
    assert endpoint_is_local("unix:///var/run/docker.sock", env) and endpoint_is_local("npipe:////./pipe/docker", env)
    assert not endpoint_is_local("tcp://10.0.0.7:1234", env) and not endpoint_is_local("kubernetes:///bk", env)
    assert endpoint_is_local("default", env)  # no DOCKER_HOST: the local daemon
    assert not endpoint_is_local("default", {**env, "DOCKER_HOST": "tcp://10.0.0.7:2375"})
    assert endpoint_is_local("default", {**env, "DOCKER_HOST": "unix:///tmp/d.sock"})
    assert endpoint_is_local("near", env) and not endpoint_is_local("far", env)
    assert not endpoint_is_local("tcp", env) and not endpoint_is_local("unknown-context", env)


def _plan_step(**options):
    return make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), build_only=True, **options)).steps[0]


def test_a_layout_only_where_it_holds_one_image(workspace):
    step = _plan_step()
    assert step.push_way(LOCAL) == "layout" and step.layout == STATE.image_layout("dev", "api")
    argv = step.argv(push="layout")
    assert argv[argv.index("--output") + 1] == f"type=oci,dest={step.layout},tar=false" and "--push" not in argv
    assert replace(step, provenance=None).push_way(LOCAL) == "buildx"  # an attestation beside the image
    assert replace(step, platform="linux/amd64,linux/arm64").push_way(LOCAL) == "buildx"
    assert replace(step, layout=None).push_way(replace(LOCAL, version=(0, 13))) == "docker-push"


def test_an_image_whose_last_layer_was_large_is_pushed_by_buildx_not_copied_into_a_layout(workspace):
    from buildplane.steps.build_argv import LAYOUT_MAX_LAYER, largest_layer
    step = _plan_step()
    manifest = json.dumps({"layers": [{"size": 10}, {"size": LAYOUT_MAX_LAYER + 1}]}).encode()
    assert largest_layer((manifest, "application/vnd.oci.image.manifest.v1+json")) == LAYOUT_MAX_LAYER + 1
    assert step.push_way(LOCAL, {"largest_layer": LAYOUT_MAX_LAYER + 1}) == "buildx"
    assert step.push_way(LOCAL, {"largest_layer": LAYOUT_MAX_LAYER}) == "layout"
    assert step.push_way(LOCAL, {}) == "layout"


# ---- a run --------------------------------------------------------------------------------------------

def run(tools, client, logs=None):
    runner = Runner(extra_path=[str(tools["bin"])])
    plan = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), build_only=True), runner=runner)
    return Engine(plan, run_context(tools["bin"], client, builder=LOCAL, logs=logs, sleep=lambda s: None)).run()


def test_up_on_a_local_builder_pushes_the_layout_and_tags_it_while_the_release_runs(tools):
    docker = tools["docker"]
    docker.rules.clear()
    docker.expect("buildx", "build", write_layout=str(FIXTURE))
    reg = OciRegistry()
    summary = run(tools, reg.client)
    assert summary.exit_code == 0, summary.error
    facts = summary.results["build:api"].facts_json()
    step = _plan_step()
    assert facts["push"] == "layout" and facts["digest"] == META["containerimage.digest"]
    assert summary.to_json()["targets"]["api"]["push"] == "layout"
    repo = step.repo.split("/", 1)[1]
    assert reg.tags[f"{repo}:{step.tag}"] == reg.tags[f"{repo}:{step.content_tag}"] == facts["digest"]
    # The mode tag: the pushed manifest's bytes, put by the tag step (while the release runs), no GET first.
    assert not [s for s in reg.seen if s.startswith("GET")]
    manifests = [s for s in reg.seen if s.startswith("PUT") and "/manifests/" in s]
    assert manifests == [f"PUT /v2/{repo}/manifests/{step.content_tag}", f"PUT /v2/{repo}/manifests/{step.tag}"]
    tag = summary.results["tag:api"]
    assert tag.status.value == "succeeded" and "manifest" not in json.dumps(summary.to_json())
    assert json.loads(STATE.build_record("dev", "api").read_text())["tagged"] is True
    build = next(c for c in docker.calls if c[:2] == ["buildx", "build"])
    assert "--push" not in build and "--output" in build
    reg.seen.clear()
    again = run(tools, reg.client)  # the no-op path: recorded as pushed under both tags, nothing asked
    assert again.to_json()["targets"]["api"]["build"] == "fresh" and reg.seen == []

    Path("ctx/app.txt").write_text("v2\n")  # the edit loop: upload sessions open while the builder works
    edited = run(tools, reg.client)
    assert edited.exit_code == 0, edited.error
    opened = [s for s in reg.seen if s.startswith("POST /v2/")]
    given_up = [s for s in reg.seen if s.startswith("DELETE /v2/")]
    # This fake builder wrote the same image again: no blob was new, so both sessions were given up.
    assert len(opened) == 2 and len(given_up) == 2 and reg.uploads == {}


def test_a_registry_failing_the_layout_push_gets_the_push_again_then_is_named(tools):
    docker = tools["docker"]
    docker.rules.clear()
    docker.expect("buildx", "build", write_layout=str(FIXTURE))
    reg = OciRegistry()
    failures = {"left": 4}

    def flaky(req: httpx.Request) -> httpx.Response:
        if req.method == "PUT" and "/manifests/bp-" in req.url.path and failures["left"]:
            failures["left"] -= 1
            return httpx.Response(500, json={"errors": [{"code": "UNKNOWN"}]})
        return reg.handle(req)
    logs: list[str] = []
    summary = run(tools, httpx.Client(transport=httpx.MockTransport(flaky)), logs=logs)
    assert summary.exit_code == 0, summary.error
    assert any("answered 500 Internal Server Error during the push; trying again in 1s (1/3)" in m for m in logs)
    assert len([c for c in docker.calls if c[:2] == ["buildx", "build"]]) == 1  # the push again, not the build

    Path("ctx/app.txt").write_text("v2\n")
    failures["left"] = 1000
    summary = run(tools, httpx.Client(transport=httpx.MockTransport(flaky)))
    assert summary.exit_code == 1
    assert "the push to registry" in summary.error and "failed 3 times, last with 500 Internal Server Error" in summary.error


def test_doctor_says_how_images_leave_the_builder(tmp_path):
    from buildplane.commands.doctor import _builder
    from buildplane.tools.builders import BuilderChoice
    from fakes import FakeTool

    running = (ROOT / "tests/fixtures/buildx-inspect-running.txt").read_text()
    FakeTool(tmp_path / "bin", "docker").expect("buildx", "inspect", "--bootstrap", stdout=running)
    runner = Runner(extra_path=[str(tmp_path / "bin")])
    near = _builder(runner, BuilderChoice(), lambda: LOCAL)
    far = _builder(runner, BuilderChoice(), lambda: replace(LOCAL, local=False))
    assert near.ok and "on this machine: images come back as an OCI layout buildplane pushes" in near.detail
    assert far.ok and "images leave it with --push" in far.detail


def test_a_repeated_index_entry_of_one_digest_is_read_once_and_prune_leaves_one(tmp_path):
    """BuildKit appends to a kept layout's index.json; an older buildx left entries with other annotations."""
    import json as _json
    import shutil as _shutil
    from buildplane.tools import layout_push as lp
    root = tmp_path / "layout"
    _shutil.copytree(FIXTURE, root)
    index = _json.loads((root / "index.json").read_text())
    entry = index["manifests"][0]
    index["manifests"] = [entry, {**entry, "annotations": {"org.opencontainers.image.ref.name": "old"}}, entry]
    (root / "index.json").write_text(_json.dumps(index))
    image = lp.read_layout(root)
    assert image.digest == entry["digest"]
    lp.prune(root, image)
    assert [m["digest"] for m in _json.loads((root / "index.json").read_text())["manifests"]] == [entry["digest"]]


def test_a_short_blob_or_a_left_mark_is_a_damaged_layout(tmp_path):
    import shutil as _shutil
    from buildplane.tools import layout_push as lp
    root = tmp_path / "layout"
    _shutil.copytree(FIXTURE, root)
    image = lp.read_layout(root)
    layer = lp.blob_path(root, image.layers[-1].digest)
    layer.write_bytes(layer.read_bytes()[:-1])
    with pytest.raises(lp.LayoutDamaged, match="has .* of its .* bytes"):
        lp.read_layout(root)
    lp.end_failed_write(root)  # a failed build over a damaged layout keeps its mark
    (root / lp.WRITING).write_text("1")
    lp.end_failed_write(root)
    assert (root / lp.WRITING).exists()
    assert lp.begin_write(root) is True and not layer.exists()  # wiped: the next build writes it anew
