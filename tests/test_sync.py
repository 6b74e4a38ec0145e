"""Sync (#14): an edit inside a target's sync rules reaches the image as one layer through the registry
API — the rules checked against the Dockerfile at load, the layer's contents (edits, new files, deletions
as whiteouts), the new manifest and config in an OCI registry stand-in, and every case that must build."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from buildplane.engine import Engine
from buildplane.plan import Options, make_plan
from buildplane.state import StateDir
from buildplane.steps import sync
from buildplane.steps.base import Status, StepResult
from buildplane.steps.build import BuildFacts
from buildplane.telemetry import events
from buildplane.tools.oci_layer import Entry, make_layer
from buildplane.tools.registry import RegistryClient
from buildplane.tools.run import Runner
from buildplane.topology import load
from buildplane.topology import sync_rules
from buildplane.topology.sync_rules import RuleError, SyncTarget, resolve
from conftest import BASE_TOPOLOGY
from fakes import run_context
from oci_registry import OciRegistry, layer_members, sha

STATE = StateDir(Path(".buildplane"))
REPO = "team/demo-api"


class Rule:
    def __init__(self, src: str, dest: str) -> None:
        self.src, self.dest = src, dest


def ctx_with(tmp: Path, dockerfile: str, files: dict[str, str]) -> Path:
    ctx = tmp / "ctx"
    for name, text in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


@pytest.fixture(autouse=True)
def _fresh_rule_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    sync_rules._MEMO.clear()
    sync_rules._RESOLVED.clear()


# ---- rules against the Dockerfile ---------------------------------------------------------------

def test_a_rule_matches_the_copy_of_the_final_stage_chain(tmp_path):
    ctx = ctx_with(tmp_path, "FROM busybox AS base\nWORKDIR /app\nCOPY apps/api api\nFROM base AS runtime\nCMD [\"x\"]\n"
                             "FROM base AS worker\nCOPY apps/worker /app/worker\n", {"apps/api/main.py": "", "apps/worker/run.sh": ""})
    got = resolve([Rule("apps/api/", "/app/api/")], ctx, ctx / "Dockerfile", "runtime", {})
    assert got == [SyncTarget("apps/api", "/app/api", True, 3)]
    # the worker stage's COPY is not in runtime's image
    with pytest.raises(RuleError) as exc:
        resolve([Rule("apps/worker", "/app/worker")], ctx, ctx / "Dockerfile", "runtime", {})
    assert "final stage `runtime` (FROM at line 4)" in exc.value.message and "apps/api → /app/api (line 3)" in exc.value.message


def test_json_form_sub_directories_files_and_flags(tmp_path):
    ctx = ctx_with(tmp_path, 'FROM scratch\nCOPY ["www", "/srv/www/"]\nCOPY --chown=1000:1000 --chmod=640 app.txt /etc/\n'
                             "COPY --from=other /x /y\nADD https://example.invalid/f /f\n",
                   {"www/css/a.css": "", "app.txt": "", "x": ""})
    got = resolve([Rule("www/css", "/srv/www/css"), Rule("app.txt", "/etc/app.txt")], ctx, ctx / "Dockerfile", None, {})
    assert got[0] == SyncTarget("www/css", "/srv/www/css", True, 2)
    assert (got[1].dest, got[1].is_dir, got[1].chown, got[1].chmod) == ("/etc/app.txt", False, "1000:1000", "640")
    for rule in (Rule("x", "/y"), Rule("www", "/srv/other")):  # a copy from a stage, a wrong destination
        with pytest.raises(RuleError):
            resolve([rule], ctx, ctx / "Dockerfile", None, {})


def test_the_answer_is_kept_by_content_so_a_no_op_run_parses_nothing(tmp_path, monkeypatch):
    ctx = ctx_with(tmp_path, "FROM scratch\nCOPY www /srv/www\n", {"www/index.html": "x"})
    first = resolve([Rule("www/", "/srv/www/")], ctx, ctx / "Dockerfile", None, {})
    sync_rules._MEMO.clear()  # a new process: only the file cache is left
    import dockerfile_parse
    monkeypatch.setattr(dockerfile_parse, "DockerfileParser", None)  # any parse would now fail
    assert resolve([Rule("www/", "/srv/www/")], ctx, ctx / "Dockerfile", None, {}) == first
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY www /srv/site\n")  # new content: parsed again
    with pytest.raises(TypeError):
        resolve([Rule("www/", "/srv/www/")], ctx, ctx / "Dockerfile", None, {})


def test_a_link_out_of_the_context_inside_a_sync_src_is_synced_as_a_link_and_blocks_nothing(workspace):
    """buildx takes such a context (the link is copied as a link) and sync writes links as links: no command
    refuses the topology for it. Only a src that is itself a link out of the context is bad input."""
    (workspace / "ctx/www").mkdir()
    os.symlink("/etc/passwd", workspace / "ctx/www/passwd")
    (workspace / "ctx/Dockerfile").write_text("FROM scratch\nCOPY app.txt /app.txt\nCOPY www /srv/www\n")
    text = BASE_TOPOLOGY.replace("    smoke: [{url", "    sync: [{src: www, dest: /srv/www}]\n    smoke: [{url", 1)
    (workspace / "topology.yaml").write_text(text)
    for args in (["plan", "--mode", "dev"], ["resources", "--json"], ["status"], ["explain", "ctx/www/passwd"]):
        proc = subprocess.run([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", *args],
                              cwd=workspace, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, (args, proc.stderr)
    rule = SyncTarget("www", "/srv/www", True, 3)
    (entry,) = sync.entries(spec_for(workspace / "ctx", rule), {}, {"www/passwd": "link:/etc/passwd"})
    assert (entry.kind, entry.link) == ("link", "/etc/passwd")
    import shutil as _shutil
    _shutil.rmtree(workspace / "ctx/www")
    os.symlink("/etc", workspace / "ctx/www")  # the src itself leads out of the context
    proc = subprocess.run([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "plan", "--mode", "dev"],
                          cwd=workspace, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "topology.yaml:18: targets.api.sync[0].src:" in proc.stderr and "ctx/www is a symbolic link" in proc.stderr


# ---- the layer ------------------------------------------------------------------------------------

def spec_for(ctx: Path, *rules: SyncTarget) -> sync.SyncSpec:
    return sync.SyncSpec(tuple(rules), ctx)


def test_the_layer_holds_edits_new_files_and_whiteouts(tmp_path):
    ctx = ctx_with(tmp_path, "FROM scratch\n", {"www/index.html": "new page", "www/css/a.css": "a", "www/img/x.png": "x"})
    os.symlink("index.html", ctx / "www/home.html")
    (ctx / "www/img/x.png").chmod(0o755)
    rule = SyncTarget("www", "/srv/www", True, 2)
    base = {"www/index.html": "-old", "www/gone.txt": "-g", "www/old/a.txt": "-1", "www/old/deep/b.txt": "-2",
            "www/img/x.png": "xold"}
    now = {"www/index.html": "-new", "www/css/a.css": "-a", "www/img/x.png": "xnew", "www/home.html": "link:index.html"}
    got = {e.path: e for e in sync.entries(spec_for(ctx, rule), base, now)}
    assert got["/srv/www/index.html"].kind == "file" and got["/srv/www/index.html"].source == str(ctx / "www/index.html")
    assert "/srv/www/old" not in got  # the emptied directory is not whited out: the base or a RUN may fill it
    assert got["/srv/www/img/x.png"].mode & 0o777 == 0o755
    assert got["/srv/www/home.html"].kind == "link" and got["/srv/www/home.html"].link == "index.html"
    assert got["/srv/www/css"].kind == "dir"  # a directory the built image did not have
    assert got["/srv/www/gone.txt"].kind == "whiteout"
    assert got["/srv/www/old/a.txt"].kind == "whiteout" and got["/srv/www/old/deep/b.txt"].kind == "whiteout"
    layer = make_layer(list(got.values()))
    members = layer_members(layer.blob)
    assert members["srv/www/index.html"] == b"new page"
    assert "srv/www/.wh.gone.txt" in members and "srv/www/old/.wh.a.txt" in members and "srv/www/.wh.old" not in members
    assert members["srv/www/home.html"].issym() and members["srv/www/css"].isdir()
    assert layer.diff_id == sha(gzip.decompress(layer.blob)) and layer.digest == sha(layer.blob)
    assert (layer.files, layer.deleted) == (4, 3)
    assert make_layer(list(got.values())).digest == layer.digest  # the same edit, the same layer


def test_changes_outside_the_rules_take_the_build(tmp_path):
    ctx = ctx_with(tmp_path, "FROM scratch\n", {"www/index.html": "x", "app.py": "y"})
    spec = spec_for(ctx, SyncTarget("www", "/srv/www", True, 2))
    for base, now, why in [
        ({"app.py": "-1"}, {"app.py": "-2"}, "app.py changed, outside the sync rules"),
        ({"<Dockerfile>": "a"}, {"<Dockerfile>": "b"}, "the Dockerfile changed"),
        ({"<FROM busybox>": "sha256:a"}, {"<FROM busybox>": "sha256:b"}, "a base image changed"),
    ]:
        with pytest.raises(sync.NotSyncable, match=why):
            sync.entries(spec, {**base, "www/index.html": "-1"}, {**now, "www/index.html": "-2"})
    named = spec_for(ctx, SyncTarget("www", "/srv/www", True, 2, chown="app:app"))
    with pytest.raises(sync.NotSyncable, match="--chown=app:app names a user"):
        sync.entries(named, {"www/index.html": "-1"}, {"www/index.html": "-2"})
    numeric = spec_for(ctx, SyncTarget("www", "/srv/www", True, 2, chown="1000", chmod="600"))
    (entry,) = sync.entries(numeric, {"www/index.html": "-1"}, {"www/index.html": "-2"})
    assert (entry.uid, entry.gid, entry.mode) == (1000, 1000, 0o600)


def test_a_build_event_says_synced_with_counts():
    class Step:
        kind, target, id, after = "build", "api", "build:api", ()
    facts = BuildFacts("r/api:dev-x", "r/api:bp-x", "dev/api", {}, digest="sha256:" + "1" * 64,
                       synced={"files": 2, "deleted": 1, "bytes": 30, "layer": "sha256:" + "2" * 64})

    class Plan:
        mode, targets, revision = "dev", ["api"], "abc"
    ev = events.step_finished(Plan, "run1", Step, StepResult("build", "api", Status.SUCCEEDED, "synced", 0.1, facts))
    attrs = ev.attributes
    assert attrs["buildplane.build"] == "synced"
    assert (attrs["buildplane.sync.files"], attrs["buildplane.sync.deleted"], attrs["buildplane.sync.bytes"]) == (2, 1, 30)


# ---- through the engine, against the registry stand-in --------------------------------------------

SYNC_TOPOLOGY = BASE_TOPOLOGY.replace("    smoke: [{url", "    sync: [{src: www/, dest: /srv/www/}]\n    smoke: [{url", 1)
DOCKERFILE = "FROM scratch\nCOPY app.txt /app.txt\nCOPY www /srv/www\n"


@pytest.fixture
def synced_workspace(tools, workspace):
    (workspace / "ctx/www").mkdir()
    (workspace / "ctx/www/index.html").write_text("<p>v1</p>\n")
    (workspace / "ctx/www/old.txt").write_text("old\n")
    (workspace / "ctx/Dockerfile").write_text(DOCKERFILE)
    (workspace / "topology.yaml").write_text(SYNC_TOPOLOGY)
    reg = OciRegistry()
    return tools, reg


def plan_for(tools, **opts):
    return make_plan(load("topology.yaml"), Options(mode=opts.pop("mode", "dev"), targets=("api",), **opts),
                     runner=Runner(extra_path=[str(tools["bin"])]))


def run(tools, reg, logs=None, **opts):
    plan = plan_for(tools, **opts)
    return Engine(plan, run_context(tools["bin"], reg.client, logs=logs, force=opts.get("force", False))).run()


def built_image(tools, reg, **opts) -> str:
    """What the fake builder 'pushes' for today's inputs: their image under their content tag, in the
    registry once the build has run."""
    build = plan_for(tools, **opts).steps[0]
    marker = tools["bin"] / f"built-{build.content_tag}"
    digest = reg.push_on_build(REPO, build.content_tag, marker, {
        "app.txt": Path("ctx/app.txt").read_bytes(), "srv/www/index.html": Path("ctx/www/index.html").read_bytes()})
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", write_metadata=digest, touch=str(marker))
    return digest


def builds(tools) -> int:
    return len([c for c in tools["docker"].calls if c[:2] == ["buildx", "build"]])


def image_values(mode="dev") -> str:
    return json.loads(STATE.image_values(mode, "api").read_text())["image"]["digest"]


def test_an_edit_inside_the_rules_is_synced_not_built(synced_workspace):
    tools, reg = synced_workspace
    base = built_image(tools, reg)
    first = run(tools, reg)
    assert first.exit_code == 0 and first.to_json()["targets"]["api"]["build"] == "built" and builds(tools) == 1
    Path("ctx/www/index.html").write_text("<p>v2</p>\n")
    Path("ctx/www/new.css").write_text("body{}\n")
    os.unlink("ctx/www/old.txt")
    reg.seen.clear()
    logs: list[str] = []
    summary = run(tools, reg, logs=logs)
    out = summary.to_json()["targets"]["api"]
    assert summary.exit_code == 0, summary.error
    assert out["build"] == "synced" and builds(tools) == 1, out  # no second build
    assert "2 file(s), 1 deleted" in out["reason"] and out["release"] == "applied"
    plan = plan_for(tools)
    tag = plan.steps[0].tag
    new = reg.manifest(REPO, tag)
    old = reg.manifest(REPO, base)
    assert out["digest"] == reg.tags[f"{REPO}:{tag}"] == image_values()  # released by the new digest
    assert new["layers"][:-1] == old["layers"] and len(new["layers"]) == len(old["layers"]) + 1
    layer = reg.blobs[new["layers"][-1]["digest"]]
    members = layer_members(layer)
    assert members["srv/www/index.html"] == b"<p>v2</p>\n" and members["srv/www/new.css"] == b"body{}\n"
    assert "srv/www/.wh.old.txt" in members and "app.txt" not in members
    config = json.loads(reg.blobs[new["config"]["digest"]])
    assert config["rootfs"]["diff_ids"][-1] == "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    assert config["history"][-1]["comment"] == "buildplane sync"
    # never the content tag: no other mode or machine can take it for a built image
    assert not any("/manifests/bp-" in s and s.startswith("PUT") for s in reg.seen), reg.seen
    assert f"{REPO}:{plan.steps[0].content_tag}" not in reg.tags
    # the next run is a no-op that asks the registry nothing
    reg.seen.clear()
    again = run(tools, reg).to_json()["targets"]["api"]
    assert again["build"] == "fresh" and reg.seen == []


def test_a_second_edit_is_one_layer_on_the_built_image_not_a_stack(synced_workspace):
    tools, reg = synced_workspace
    base = built_image(tools, reg)
    assert run(tools, reg).exit_code == 0
    for text in ("<p>v2</p>\n", "<p>v3</p>\n"):
        Path("ctx/www/index.html").write_text(text)
        assert run(tools, reg).to_json()["targets"]["api"]["build"] == "synced"
    new = reg.manifest(REPO, plan_for(tools).steps[0].tag)
    assert len(new["layers"]) == len(reg.manifest(REPO, base)["layers"]) + 1
    assert layer_members(reg.blobs[new["layers"][-1]["digest"]])["srv/www/index.html"] == b"<p>v3</p>\n"
    Path("ctx/www/index.html").write_text("<p>v1</p>\n")  # back to the built files: the built image again
    summary = run(tools, reg).to_json()["targets"]["api"]
    assert summary["build"] == "fresh" and summary["digest"] == base and builds(tools) == 1


@pytest.mark.parametrize("change,why", [
    (lambda: Path("ctx/app.txt").write_text("v2\n"), "app.txt changed, outside the sync rules"),
    (lambda: Path("ctx/Dockerfile").write_text(DOCKERFILE + "ENV A=1\n"), "the Dockerfile, a build arg"),
])
def test_a_change_outside_the_rules_builds_saying_why(synced_workspace, change, why):
    tools, reg = synced_workspace
    built_image(tools, reg)
    assert run(tools, reg).exit_code == 0
    Path("ctx/www/index.html").write_text("<p>v2</p>\n")
    change()
    built_image(tools, reg)
    logs: list[str] = []
    summary = run(tools, reg, logs=logs)
    assert summary.exit_code == 0, summary.error
    assert summary.to_json()["targets"]["api"]["build"] == "built" and builds(tools) == 2
    assert any("building, not syncing" in m and why in m for m in logs), logs


def test_rebuild_force_and_staging_never_sync(synced_workspace):
    tools, reg = synced_workspace
    built_image(tools, reg)
    assert plan_for(tools).steps[0].sync is not None
    assert plan_for(tools, rebuild=True).steps[0].sync is None
    assert plan_for(tools, force=True).steps[0].sync is None
    assert plan_for(tools, mode="staging", build_only=True).steps[0].sync is None
    assert run(tools, reg).exit_code == 0
    Path("ctx/www/index.html").write_text("<p>v2</p>\n")
    assert run(tools, reg).to_json()["targets"]["api"]["build"] == "synced"
    rebuilt = built_image(tools, reg, rebuild=True)
    summary = run(tools, reg, rebuild=True)  # nothing changed since the sync: --rebuild still builds it for real
    out = summary.to_json()["targets"]["api"]
    assert summary.exit_code == 0 and out["build"] == "built" and builds(tools) == 2, summary.error
    assert out["reason"] == "--rebuild: the last image was synced, not built" and out["digest"] == rebuilt
    assert run(tools, reg).to_json()["targets"]["api"]["build"] == "fresh"


def test_an_index_of_several_platforms_takes_the_build(synced_workspace):
    tools, reg = synced_workspace
    single = built_image(tools, reg)
    size = len(reg.manifests[single][0])
    index = reg.put(REPO, "multi", {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                    "manifests": [{"digest": single, "size": size, "platform": {"os": "linux", "architecture": a},
                                                   "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
                                                  for a in ("amd64", "arm64")]})
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", write_metadata=index)
    reg.tags[f"{REPO}:{plan_for(tools).steps[0].content_tag}"] = index
    assert run(tools, reg).exit_code == 0
    Path("ctx/www/index.html").write_text("<p>v2</p>\n")
    built_image(tools, reg)
    logs: list[str] = []
    summary = run(tools, reg, logs=logs)
    assert summary.exit_code == 0, summary.error
    assert summary.to_json()["targets"]["api"]["build"] == "built"
    assert any("index of 2 platform images" in m for m in logs), logs


def test_large_layers_go_up_in_chunks(monkeypatch):
    from buildplane.tools import registry_parts
    monkeypatch.setattr(registry_parts, "CHUNK", 1000)
    reg = OciRegistry()
    data = os.urandom(3500)
    RegistryClient(client=reg.client).push_blob("registry.example", REPO, data, sha(data))
    assert reg.blobs[sha(data)] == data
    assert [s.split()[0] for s in reg.seen] == ["POST", "PATCH", "PATCH", "PATCH", "PATCH", "PUT"]
    small = b"tiny"
    reg.single_post = True  # a registry that takes the monolithic POST: one request
    reg.seen.clear()
    RegistryClient(client=reg.client).push_blob("registry.example", REPO, small, sha(small))
    assert reg.blobs[sha(small)] == small and [s.split()[0] for s in reg.seen] == ["POST"]


def test_a_wrong_digest_is_refused_by_the_registry_and_fails_the_step():
    reg = OciRegistry()
    with pytest.raises(Exception, match="HTTP 400"):
        RegistryClient(client=reg.client).push_blob("registry.example", REPO, b"abc", sha(b"abd"))


def test_make_layer_entry_kinds(tmp_path):
    f = tmp_path / "f"
    f.write_text("hello")
    layer = make_layer([Entry("/a/f", "file", source=str(f), mode=0o600, uid=5, gid=6),
                        Entry("/a", "dir", mode=0o755), Entry("/a/gone", "whiteout")])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob))) as tar:
        names = tar.getnames()
        info = tar.getmember("a/f")
    # whiteouts first: a runtime removes the path as it applies one, so a new entry at it must follow
    assert names == ["a/.wh.gone", "a", "a/f"] and (info.mode, info.uid, info.gid) == (0o600, 5, 6)


def test_a_registry_error_on_the_upload_fails_the_run_with_its_status(synced_workspace):
    tools, reg = synced_workspace
    built_image(tools, reg)
    assert run(tools, reg).exit_code == 0
    Path("ctx/www/index.html").write_text("<p>v2</p>\n")

    def refuse_uploads(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            return httpx.Response(403, json={"errors": [{"code": "DENIED"}]})
        return reg.handle(req)
    plan = plan_for(tools)
    summary = Engine(plan, run_context(tools["bin"], httpx.Client(transport=httpx.MockTransport(refuse_uploads)))).run()
    assert summary.exit_code == 4 and "denied access" in summary.error and builds(tools) == 1


def test_explain_names_the_sync_path_and_plan_shows_the_rules(synced_workspace, run_cli):
    res = run_cli("--topology", "topology.yaml", "explain", "ctx/www/index.html", "ctx/app.txt", "chart/values-dev.yaml")
    lines = res.out.splitlines()
    # web builds from the same context without sync rules: the file rebuilds web, and only syncs api
    assert lines[0].startswith("ctx/www/index.html: rebuild + release — api (in dev, its sync rule www → /srv/www puts "
                               "it at /srv/www/index.html; then released); web (in its build context ctx"), lines
    Path("topology.yaml").write_text(SYNC_TOPOLOGY.replace("  web:\n", "  web:\n    sync: [{src: www, dest: /srv/www}]\n"))
    res = run_cli("--topology", "topology.yaml", "explain", "ctx/www/index.html", "ctx/app.txt", "chart/values-dev.yaml")
    lines = res.out.splitlines()
    assert lines[0].startswith("ctx/www/index.html: sync (no build) — api (in dev, its sync rule"), lines
    assert lines[1].startswith("ctx/app.txt: rebuild + release") and lines[2].startswith("chart/values-dev.yaml: release only")
    res = run_cli("--topology", "topology.yaml", "plan", "--mode", "dev", "api")
    assert "sync instead when every change since the last built image lies inside these rules" in res.out
    assert "ctx/www → /srv/www (COPY at Dockerfile line 3)" in res.out
    assert "sync instead" not in run_cli("--topology", "topology.yaml", "plan", "--mode", "dev", "api", "--rebuild").out


def test_a_synced_image_under_a_moved_mode_tag_is_tagged_not_uploaded(synced_workspace):
    tools, reg = synced_workspace
    built_image(tools, reg)
    assert run(tools, reg).exit_code == 0
    Path("ctx/www/index.html").write_text("<p>v2</p>\n")
    synced = run(tools, reg).to_json()["targets"]["api"]
    assert synced["build"] == "synced"
    # A commit moves the mode tag (here: the tag template); the inputs are the synced ones.
    Path("topology.yaml").write_text(SYNC_TOPOLOGY.replace('tag: "dev-{git_sha}', 'tag: "dev-next-{git_sha}'))
    reg.seen.clear()
    again = run(tools, reg).to_json()["targets"]["api"]
    assert again["build"] == "fresh" and "the synced image of these inputs" in again["reason"]
    assert again["digest"] == synced["digest"] and again["image"].split(":")[-1].startswith("dev-next-")
    assert reg.tags[f"{REPO}:{again['image'].split(':')[-1]}"] == synced["digest"]
    assert not [s for s in reg.seen if s.startswith(("POST", "PATCH"))] and builds(tools) == 1  # no upload, no build


def test_a_rule_for_copy_into_the_image_root_matches(tmp_path):
    """`COPY rootfs/ /`: the destination normalised to `//`, which matched no rule."""
    from buildplane.topology.sync_rules import resolve
    ctx = ctx_with(tmp_path, "FROM scratch\nCOPY rootfs/ /\n", {"rootfs/etc/app.conf": "x"})
    rule = type("R", (), {"src": "rootfs/", "dest": "/"})()
    (target,) = resolve([rule], ctx, ctx / "Dockerfile", None, {})
    assert target.dest == "/" and target.image_path("rootfs/etc/app.conf") == "/etc/app.conf"


def test_a_rule_on_an_add_that_unpacks_an_archive_is_refused(tmp_path):
    import tarfile as _tarfile
    from buildplane.topology.sync_rules import RuleError, resolve
    ctx = ctx_with(tmp_path, "FROM scratch\nADD vendor.tar /srv/vendor/\nADD notes.txt /srv/notes.txt\n",
                   {"notes.txt": "plain"})
    with _tarfile.open(ctx / "vendor.tar", "w") as tar:
        tar.add(ctx / "notes.txt", arcname="inside.txt")
    rule = type("R", (), {"src": "vendor.tar", "dest": "/srv/vendor/vendor.tar"})()
    with pytest.raises(RuleError, match=r"`ADD` at .* line 2 unpacks the archive .*vendor.tar"):
        resolve([rule], ctx, ctx / "Dockerfile", None, {})
    plain = type("R", (), {"src": "notes.txt", "dest": "/srv/notes.txt"})()
    (target,) = resolve([plain], ctx, ctx / "Dockerfile", None, {})  # ADD of a plain file copies it: syncable
    assert target.line == 3


def test_a_200_error_page_for_a_manifest_by_digest_is_a_named_registry_fault_never_kept(synced_workspace):
    """A proxy answering 200 with an HTML page where the built image's manifest should be: the sync names the
    registry, keeps nothing under .buildplane/state/oci, and a later run (the registry well again) syncs."""
    import httpx as _httpx
    tools, reg = synced_workspace
    built_image(tools, reg)
    assert run(tools, reg).exit_code == 0
    Path("ctx/www/index.html").write_text("<p>v2</p>\n")
    broken = {"on": True}

    def handle(req):
        if broken["on"] and req.method == "GET" and "/manifests/sha256:" in req.url.path:
            return _httpx.Response(200, text="<!doctype html><title>Bad gateway</title>", headers={"content-type": "text/html"})
        return reg.handle(req)
    client = _httpx.Client(transport=_httpx.MockTransport(handle))
    plan = plan_for(tools)
    summary = Engine(plan, run_context(tools["bin"], client)).run()
    assert summary.exit_code == 1
    assert "answered" in summary.error and "text/html" in summary.error and "not that digest" in summary.error
    assert not list(Path(".buildplane/state/oci").glob("*")) or all(
        "html" not in p.read_text(errors="replace") for p in Path(".buildplane/state/oci").glob("*"))
    broken["on"] = False
    assert Engine(plan_for(tools), run_context(tools["bin"], client)).run().exit_code == 0


def test_the_shipped_client_checks_a_blob_by_digest(tmp_path):
    """tools/http.py's client (what the product runs), against a loopback server answering the wrong bytes."""
    import http.server as _hs
    import threading as _th
    from buildplane.tools.registry import RegistryClient
    from buildplane.tools.registry_parts import BadAnswer

    class H(_hs.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"{}" if self.path == "/v2/" else b"<html>oops</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    server = _hs.ThreadingHTTPServer(("127.0.0.1", 0), H)
    _th.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(BadAnswer, match=f"registry {host} answered blob sha256:aaaaaaaaaaaa of team/app"):
            RegistryClient().blob(host, "team/app", "sha256:" + "a" * 64)
    finally:
        server.shutdown()


def test_a_sync_that_would_carry_too_much_takes_the_build(synced_workspace, monkeypatch):
    tools, reg = synced_workspace
    built_image(tools, reg)
    assert run(tools, reg).exit_code == 0
    Path("ctx/www/big.bin").write_bytes(b"x" * 5000)
    monkeypatch.setenv("BUILDPLANE_SYNC_MAX_BYTES", "4096")
    built_image(tools, reg)
    logs: list[str] = []
    summary = run(tools, reg, logs=logs)
    assert summary.exit_code == 0
    assert any("building, not syncing: 0 MB changed since the last build (over 0 MB)" in m for m in logs), logs
    assert summary.result("build:api").facts.synced is None


def test_a_synced_image_is_never_reported_in_a_repository_that_lacks_it(synced_workspace):
    """Found by the model test: after a sync, the final registry path moved; the "same inputs, mode tag moved"
    shortcut tagged the old repository and reported the new one, which never had the image."""
    tools, reg = synced_workspace
    built_image(tools, reg)
    assert run(tools, reg).exit_code == 0
    Path("ctx/www/index.html").write_text("<p>v2</p>\n")
    synced = run(tools, reg)
    assert synced.result("build:api").facts.synced is not None
    topo = Path("topology.yaml")
    topo.write_text(topo.read_text().replace("final: registry.example/team", "final: registry.example/moved"))
    build = plan_for(tools).steps[0]  # the build the new repository needs: the fake builder pushes there
    marker = tools["bin"] / f"built-moved-{build.content_tag}"
    digest = reg.push_on_build("moved/demo-api", build.content_tag, marker, {
        "app.txt": Path("ctx/app.txt").read_bytes(), "srv/www/index.html": Path("ctx/www/index.html").read_bytes()})
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", write_metadata=digest, touch=str(marker))
    moved = run(tools, reg)
    assert moved.exit_code == 0, moved.error
    facts = moved.result("build:api").facts
    assert facts.image.startswith("registry.example/moved/demo-api:")
    assert f"moved/demo-api:{facts.image.rsplit(':', 1)[1]}" in reg.tags


def test_a_copy_of_thousands_of_files_without_a_sync_rule_is_said_once_with_the_rule(tools, workspace):
    """A one-file edit in a COPY of a large tree makes BuildKit copy and push that whole layer again: the build
    says so once (not on every build) with the rule to add, `explain` names it, and the rule it prints is one
    the topology accepts."""
    from fakes import DIGEST, run_up
    from buildplane.topology.sync_hint import MANY_FILES
    for d in range(31):
        (workspace / f"ctx/www/d{d}").mkdir(parents=True)
        for f in range(100):
            (workspace / f"ctx/www/d{d}/f{f}.txt").write_text(f"{d}.{f}\n")
    (workspace / "ctx/Dockerfile").write_text("FROM scratch\nCOPY app.txt /app.txt\nCOPY www/ /srv/www/\n")
    assert sum(1 for _ in (workspace / "ctx/www").rglob("*.txt")) > MANY_FILES
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", write_metadata=DIGEST)
    logs: list[str] = []
    assert run_up(tools["bin"], targets=("api",), build_only=True, logs=logs).exit_code == 0
    said = [m for m in logs if "copies 3100 files" in m]
    assert said == ["api: `COPY www/ /srv/www/` (Dockerfile line 3) copies 3100 files, so a one-file edit there "
                    "rebuilds and pushes that whole layer; a sync rule takes such edits without a build — add to "
                    "targets.api: sync: [{src: www/, dest: /srv/www/}]"]
    Path("ctx/www/d0/f0.txt").write_text("edited\n")
    again: list[str] = []
    assert run_up(tools["bin"], targets=("api",), build_only=True, logs=again).exit_code == 0
    assert not [m for m in again if "copies 3100 files" in m]  # once, not on every build
    proc = subprocess.run([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "explain", "ctx/www/d0/f0.txt"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "sync: [{src: www/, dest: /srv/www/}]" in proc.stdout, proc.stdout + proc.stderr
    text = Path("topology.yaml").read_text().replace("    smoke: [{url", "    sync: [{src: www/, dest: /srv/www/}]\n    smoke: [{url", 1)
    Path("topology.yaml").write_text(text)
    plan = subprocess.run([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "plan", "--mode", "dev"],
                          capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr  # the printed rule is accepted as it is
