"""The edit loop's fast paths (#13): no registry call on a no-op, the registry question racing the
build start, one push chosen per builder, auth sent up front, and the start-up savings (parse cache,
git HEAD read from .git, buildx run as its plugin) — each able to fail."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from buildplane.engine import Engine
from buildplane.plan import Options, make_plan
from buildplane.tools.git import git_head
from buildplane.state import StateDir
from buildplane.tools.buildx import pushed_digest
from buildplane.tools import buildx
from buildplane.tools.buildx import BuilderInfo
from buildplane.tools.registry import RegistryClient
from buildplane.tools.run import Runner
from buildplane.topology import load
from conftest import ROOT
from fakes import DIGEST, registry_stub, run_context, seed_builder

STATE = StateDir(Path(".buildplane"))


def run(tools, client, builder=None, logs=None):
    runner = Runner(extra_path=[str(tools["bin"])])
    plan = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), build_only=True), runner=runner)
    return Engine(plan, run_context(tools["bin"], client, builder=builder, logs=logs)).run()


def test_the_no_op_path_asks_no_registry_anything(tools):
    client, seen = registry_stub(set())
    assert run(tools, client).exit_code == 0
    assert any(s.startswith("PUT ") for s in seen)  # the first run pushed and tagged
    seen.clear()
    summary = run(tools, client)
    assert summary.to_json()["targets"]["api"]["build"] == "fresh" and seen == []
    assert [c for c in tools["docker"].calls if "--push" in c].__len__() == 1


def test_in_the_edit_loop_a_found_image_stops_the_build_it_raced(tools):
    client, seen = registry_stub(set())
    assert run(tools, client).exit_code == 0
    Path("ctx/app.txt").write_text("a teammate built exactly this\n")
    record = json.loads(STATE.build_record("dev", "api").read_text())
    assert record["tagged"] is True
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", sleep=30)  # a slow build: it must be stopped, not waited for
    inputs = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), build_only=True)).steps[0]
    existing = {f"team/demo-api:{inputs.content_tag}"}
    logs: list[str] = []
    started = time.monotonic()
    summary = run(tools, registry_stub(existing)[0], logs=logs)
    assert time.monotonic() - started < 5
    out = summary.to_json()["targets"]["api"]
    assert out["build"] == "fresh" and "already in the final registry" in out["reason"], out
    assert any("build stopped" in m for m in logs)
    assert json.loads(STATE.build_record("dev", "api").read_text())["content_ref"].endswith(inputs.content_tag)


def test_a_registry_refusal_during_the_race_fails_the_build(tools):
    client, _ = registry_stub(set())
    assert run(tools, client).exit_code == 0
    Path("ctx/app.txt").write_text("v2\n")
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", sleep=30)
    refusing = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(403)))
    started = time.monotonic()
    summary = run(tools, refusing)
    assert time.monotonic() - started < 5
    assert summary.exit_code == 4 and "denied access" in summary.error


def test_a_builder_that_pushes_every_tag_twice_builds_into_the_store_and_pushes_once(tools):
    docker = tools["docker"]
    docker.rules.clear()
    docker.expect("buildx", "build", write_metadata="sha256:" + "f" * 64)
    real = (ROOT / "tests/fixtures/docker-push-output.txt").read_text()
    docker.expect("push", stdout=real)
    old = BuilderInfo(True, "builder default (driver docker)", "docker", (0, 13))
    summary = run(tools, registry_stub(set())[0], builder=old)
    assert summary.exit_code == 0, summary.error
    build = next(c for c in docker.calls if c[:2] == ["buildx", "build"])
    assert "--load" in build and "--push" not in build
    pushes = [c for c in docker.calls if c[0] == "push"]
    assert len(pushes) == 1 and pushes[0][1].split(":")[-1].startswith("bp-")  # the content tag, once
    facts = summary.results["build:api"].facts_json()
    assert facts["push"] == "docker-push" and facts["digest"] == pushed_digest(real)
    assert pushed_digest(real) == "sha256:985e87d9a56a60ab4f027a59a869e1032660d8047d54b4448b4ec0f20530826a"
    new = run(tools, registry_stub(set())[0], builder=BuilderInfo(True, "b", "docker", (0, 29)))
    assert new.exit_code == 0  # fresh now; the push rule for a new buildx is buildx's own
    assert BuilderInfo(True, "b", "docker", (0, 29)).push == "buildx"
    assert BuilderInfo(True, "b", "docker-container", (0, 13)).push == "buildx"


def test_buildx_version_parser_on_real_output():
    assert buildx.parse_version("github.com/docker/buildx 0.29.1+ds1 0.29.1+ds1-4") == (0, 29)
    assert buildx.parse_version("github.com/docker/buildx v0.13.1 788433953af10f2a698f5c07611dddce2af08646") == (0, 13)
    assert buildx.parse_version("buildx: command not found") is None


def test_auth_goes_up_front_once_the_challenge_is_known(tmp_path):
    cfg = tmp_path / "docker"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"auths": {"reg.example": {
        "auth": base64.b64encode(b"dev:s3cret").decode()}}}))
    asked: list[tuple[str, str | None]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        asked.append((req.method, req.headers.get("authorization")))
        if not req.headers.get("authorization"):
            return httpx.Response(401, headers={"www-authenticate": 'Basic realm="registry"'})
        return httpx.Response(200, headers={"docker-content-digest": DIGEST})

    challenges = tmp_path / "challenges.json"

    def client():
        return RegistryClient(client=httpx.Client(transport=httpx.MockTransport(handler)),
                              environ={"DOCKER_CONFIG": str(cfg)}, challenges=challenges)
    assert client().manifest_digest("reg.example/team/app:1", push=True) == DIGEST
    assert [a is None for _, a in asked] == [True, False]  # the first run learns the challenge
    assert "s3cret" not in challenges.read_text() and "Basic" in challenges.read_text()
    asked.clear()
    assert client().manifest_digest("reg.example/team/app:2") == DIGEST
    assert len(asked) == 1 and asked[0][1].startswith("Basic ")  # the next run: one round trip


def test_the_freshness_head_carries_the_push_scope(tmp_path):
    scopes = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/token":
            scopes.append(req.url.params.get("scope"))
            return httpx.Response(200, json={"token": "t0k3n-value"})
        if req.headers.get("authorization") != "Bearer t0k3n-value":
            return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://auth.example/token",service="reg"'})
        return httpx.Response(404)
    reg = RegistryClient(client=httpx.Client(transport=httpx.MockTransport(handler)), environ={"HOME": str(tmp_path)})
    assert reg.manifest_digest("reg.example/team/app:bp-1", push=True) is None
    assert scopes == ["repository:team/app:push,pull"]


def test_the_topology_parse_is_kept_and_env_expanded_afresh(workspace, monkeypatch):
    text = Path("topology.yaml").read_text().replace("mirror.example:8083", "${BP_TEST_MIRROR}")
    Path("topology.yaml").write_text(text)
    monkeypatch.setenv("BP_TEST_MIRROR", "mirror-one.example:1")
    first = load("topology.yaml")
    kept = list((Path(os.environ["HOME"]) / ".cache/buildplane/topology").glob("*.json"))
    assert len(kept) == 1 and "mirror-one" not in kept[0].read_text()  # no value of the environment kept
    monkeypatch.setenv("BP_TEST_MIRROR", "mirror-two.example:2")
    second = load("topology.yaml")
    assert first.registries.mirror == "mirror-one.example:1" and second.registries.mirror == "mirror-two.example:2"
    probe = ("import sys; from buildplane.topology import load; load('topology.yaml'); "
             "print('ruamel' in ' '.join(sys.modules))")
    hit = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ, check=True)
    assert hit.stdout.strip() == "False"  # a cache hit never loads the YAML parser
    monkeypatch.delenv("BP_TEST_MIRROR")
    res = subprocess.run([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "plan", "--mode", "dev"],
                         capture_output=True, text=True, env=os.environ)
    assert res.returncode == 2 and "topology.yaml:" in res.stderr and "BP_TEST_MIRROR" in res.stderr  # with its line


def test_git_head_is_read_from_the_repository_files(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run(git[:3] + ["init", "-q", "-b", "main"], check=True)
    (repo / "f").write_text("x")
    subprocess.run(git + ["add", "f"], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    sha = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (repo / "sub").mkdir()
    assert git_head(repo / "sub") == sha  # a loose ref, found from a subdirectory
    subprocess.run(git + ["pack-refs", "--all"], check=True)
    assert git_head(repo) == sha  # from packed-refs
    subprocess.run(git + ["checkout", "-q", "--detach"], check=True)
    assert git_head(repo) == sha  # detached
    subprocess.run(git + ["worktree", "add", "-q", str(tmp_path / "wt")], check=True)
    assert git_head(tmp_path / "wt") is None  # a worktree: git itself is asked
    (tmp_path / "plain").mkdir()
    assert git_head(tmp_path / "plain") == ""  # no repository above: "nogit" without asking git


def test_buildx_runs_as_its_plugin_only_behind_the_real_docker_cli(tmp_path):
    plugins = tmp_path / "config" / "cli-plugins"
    plugins.mkdir(parents=True)
    plugin = plugins / "docker-buildx"
    plugin.write_bytes(b"\x7fELF fake")
    plugin.chmod(0o755)
    real, wrapper = tmp_path / "docker", tmp_path / "docker-wrapper"
    real.write_bytes(b"\x7fELF docker")
    wrapper.write_text("#!/bin/sh\nexec docker \"$@\"\n")
    env = {"DOCKER_CONFIG": str(tmp_path / "config"), "HOME": str(tmp_path)}
    argv = ["docker", "buildx", "build", "ctx"]
    assert buildx.direct(argv, str(real), env) == [str(plugin), "build", "ctx"]
    assert buildx.direct(argv, str(wrapper), env) == argv  # a wrapper's behaviour is kept
    assert buildx.direct(["docker", "push", "x"], str(real), env) == ["docker", "push", "x"]
    plugin.unlink()
    found = buildx.direct(argv, str(real), env)
    assert found == argv or Path(found[0]).parent.as_posix() in buildx.plugin_dirs(env)[1:]  # a system-wide one


def test_a_run_with_work_connects_to_the_registry_early_and_a_no_op_never(tools, monkeypatch):
    """`up` opens registry connections while the engine starts only when a build step has work; the no-op
    path stays free of httpx and of any request."""
    calls: list[str] = []
    monkeypatch.setattr(RegistryClient, "prepare", lambda self, host, connections=2: calls.append(host))
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(f"{req.method} {req.url.path}")
        return registry_stub(set())[0]._transport.handle_request(req)
    monkeypatch.setattr(RegistryClient, "client", property(lambda self: httpx.Client(transport=httpx.MockTransport(handler))))
    monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")
    seed_builder(dict(os.environ))
    from buildplane import cli
    assert cli.main(["--topology", "topology.yaml", "up", "--mode", "dev", "api", "--build-only"]) == 0
    assert calls == ["registry.example"] and seen
    calls.clear()
    assert cli.main(["--topology", "topology.yaml", "up", "--mode", "dev", "api", "--build-only"]) == 0
    assert calls == []  # nothing to do: no early connection


def test_prepare_opens_pooled_connections_in_the_background():
    seen: list[str] = []
    got = __import__("threading").Event()

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(f"{req.method} {req.url}")
        if len(seen) == 2:
            got.set()
        return httpx.Response(401)
    reg = RegistryClient(client=httpx.Client(transport=httpx.MockTransport(handler)), plain_http=frozenset({"reg.example:5000"}))
    reg.prepare("reg.example:5000")
    assert got.wait(5) and seen == ["GET http://reg.example:5000/v2/"] * 2


def test_a_run_keeps_its_bytecode_even_where_the_environment_says_not_to(tmp_path):
    """PYTHONDONTWRITEBYTECODE (dev containers, CI images) would compile every module of the package from
    source on every run (~45 ms of a no-op): a run writes the package's bytecode anyway; pytest is left alone."""
    import importlib.util

    import buildplane.plan

    cached = Path(importlib.util.cache_from_source(buildplane.plan.__file__))
    cached.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    probe = "import sys, buildplane, buildplane.plan; print(sys.dont_write_bytecode)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    assert cached.is_file()  # the next run reads it instead of compiling
    assert sys.dont_write_bytecode == bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))  # this process: untouched


def test_an_edit_saved_while_the_builder_reads_the_context_is_not_recorded_under_the_old_digest(tools):
    """The builder took the new bytes; the record and the content tag must not call them the old inputs'
    image, or the next run is fresh on a tree the image does not hold."""
    from fakes import DIGEST, run_up
    from buildplane.state import StateDir
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", write_metadata=DIGEST, write_file={"ctx/app.txt": "saved during the build\n"})
    logs: list[str] = []
    summary = run_up(tools["bin"], targets=("api",), build_only=True, logs=logs)
    assert summary.exit_code == 0, summary.error
    assert any("ctx/app.txt changed while the builder read the context" in m for m in logs), logs
    record = StateDir(Path(".buildplane")).build_record("dev", "api")
    assert not record.exists()  # nothing recorded: the next run builds the tree as it is now
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", write_metadata=DIGEST)
    again = run_up(tools["bin"], targets=("api",), build_only=True)
    assert again.exit_code == 0 and again.result("build:api").status.value == "succeeded"
    assert record.exists()
