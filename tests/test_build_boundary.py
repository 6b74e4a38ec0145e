"""Build step and engine at the tool boundary: a fake `docker` (records argv, fails on anything
unexpected) and a registry stand-in on httpx.MockTransport."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from buildplane.engine import Engine, target_lock
from buildplane.errors import StepFailed
from buildplane.plan import Options, make_plan
from buildplane.state import StateDir
from buildplane.tools.buildx import (BuilderInfo, PushFailure, builder_key, parse_progress, push_failure,
                                     supports_registry_cache)
from buildplane.tools.registry import RegistryClient
from buildplane.tools.run import Runner
from buildplane.topology import load
from conftest import ROOT
from fakes import DIGEST, FakeTool, registry_stub, run_context, seed_builder

def engine_for(workspace: Path, docker: FakeTool, client: httpx.Client, *, targets=("api",), force=False, mode="dev"):
    topo = load("topology.yaml")
    runner = Runner(extra_path=[str(docker.path.parent)])
    plan = make_plan(topo, Options(mode=mode, targets=targets, build_only=True, force=force), runner=runner)
    logs: list[str] = []
    return Engine(plan, run_context(docker.path.parent, client, force=force, logs=logs)), logs


def build_step(**opts):
    return make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), build_only=True, **opts)).steps[0]


BASE = "registry.test/library/busybox:1.35"
BASE_DIGEST = "sha256:" + "5" * 64


def pin_bases(workspace):
    """A Dockerfile with an external base (and a pinned one), the base's digest asked a moment ago."""
    (workspace / "ctx/Dockerfile").write_text(f"FROM {BASE} AS base\nFROM registry.test/x@{BASE_DIGEST}\n"
                                              "FROM base\nCOPY app.txt /app.txt\n")
    known = workspace / ".buildplane/state/base-digests.json"
    known.parent.mkdir(parents=True, exist_ok=True)
    known.write_text(json.dumps({BASE: {"digest": BASE_DIGEST, "at": time.time()}}))


def test_each_external_base_is_built_from_the_digest_the_inputs_hold(workspace):
    pin_bases(workspace)
    step = build_step()
    assert step.inputs.files[f"<FROM {BASE}>"] == BASE_DIGEST
    argv = step.argv()
    assert argv[argv.index("--build-context") + 1] == f"{BASE}=docker-image://{BASE}@{BASE_DIGEST}"
    assert argv.count("--build-context") == 1  # the FROM already pinned by digest needs none
    export = step.export_argv()  # the background export solves the same graph
    assert export[export.index("--build-context") + 1] == f"{BASE}=docker-image://{BASE}@{BASE_DIGEST}"
    (workspace / ".buildplane/state/base-digests.json").write_text(
        json.dumps({BASE: {"digest": "unresolved", "at": time.time()}}))
    assert "--build-context" not in build_step().argv()  # not resolved (offline): buildx resolves the tag


def test_parser_on_saved_real_output():
    fx = ROOT / "tests/fixtures"
    cold = parse_progress((fx / "buildx-progress-cold.txt").read_text().splitlines())
    warm = parse_progress((fx / "buildx-progress-cache-import.txt").read_text().splitlines())
    assert (cold.total_steps, cold.cached_steps) == (2, 0)
    assert (warm.total_steps, warm.cached_steps) == (2, 2)


def test_registry_cache_capability_rules():
    assert not supports_registry_cache("docker", [["driver-type", "io.containerd.content.v1"]])
    assert supports_registry_cache("docker", [["driver-type", "io.containerd.snapshotter.v1"]])
    assert supports_registry_cache("docker-container", [])


def test_argv_matches_python_on_whales(workspace, tmp_path, monkeypatch):
    """The plan's buildx argv is what python-on-whales would run for the same build."""
    from python_on_whales import DockerClient

    monkeypatch.delenv("BUILDPLANE_WAIT_CACHE")
    monkeypatch.delenv("CI", raising=False)

    fake = FakeTool(tmp_path / "bin", "docker").expect("buildx", "build")
    client = DockerClient(client_call=[str(fake.path)])
    expected = []
    pin_bases(workspace)
    for spec in (build_step(), build_step(wait_cache=True, pull=True)):  # export after the build / inside it
        assert spec.provenance is False  # dev: no attestation manifest to push
        assert spec.base_contexts == {BASE: f"docker-image://{BASE}@{BASE_DIGEST}"}
        inline = spec.export == "inline"
        client.buildx.build(
            spec.context, build_args=spec.build_args, build_contexts=spec.base_contexts, push=True,
            metadata_file=spec.metadata_file, file=spec.dockerfile,
            target=spec.build_target, cache_from=spec.cache_from_arg(), cache_to=spec.cache_to_arg() if inline else None,
            network=spec.network, tags=[spec.content_ref], progress="plain", provenance=False, pull=spec.pull,
        )
        expected.append(spec.argv()[1:])
        # the background export: the same build, the registry cache its only output
        client.buildx.build(spec.context, build_args=spec.build_args, build_contexts=spec.base_contexts,
                            file=spec.dockerfile, target=spec.build_target,
                            cache_to=spec.cache_to_arg(), output={"type": "cacheonly"}, network=spec.network,
                            progress="plain", provenance=False)
        expected.append(spec.export_argv()[1:])
    assert fake.calls == expected
    assert ["--cache-to" in argv for argv in expected] == [False, True, True, True]
    assert fake.unexpected() == []


def test_fresh_image_runs_no_builder(workspace, tmp_path):
    docker = FakeTool(tmp_path / "bin", "docker")  # no call expected at all
    spec = build_step()
    client, seen = registry_stub({f"team/demo-api:{spec.content_tag}"})
    eng, _ = engine_for(workspace, docker, client)
    summary = eng.run()
    assert summary.exit_code == 0
    t = summary.to_json()["targets"]["api"]
    assert t["build"] == "fresh" and docker.calls == []
    # The mode tag was missing: added registry-side by copying the manifest.
    assert f"PUT /v2/team/demo-api/manifests/{spec.tag}" in seen


def test_changed_input_builds_and_says_why(workspace, tmp_path):
    docker = FakeTool(tmp_path / "bin", "docker").expect("buildx", "build", write_metadata=DIGEST,
                                                         stdout="#4 [2/2] COPY app.txt /app.txt\n#4 DONE 0.0s\n")
    client, _ = registry_stub(set())
    eng, logs = engine_for(workspace, docker, client)
    assert eng.run().exit_code == 0
    (workspace / "ctx/app.txt").write_text("v2\n")
    eng, logs = engine_for(workspace, docker, client)
    summary = eng.run().to_json()
    assert summary["targets"]["api"]["build"] == "built"
    assert summary["targets"]["api"]["reason"] == "ctx/app.txt changed"
    assert summary["targets"]["api"]["digest"] == DIGEST
    assert summary["targets"]["api"]["cache"] == {"import": True, "export": True, "cached_steps": 0, "total_steps": 1}
    assert len(docker.calls) == 2 and docker.unexpected() == []


def test_dockerignored_edit_changes_nothing(workspace, tmp_path):
    (workspace / "ctx/.dockerignore").write_text("docs\n*.md\n!KEEP.md\n")
    (workspace / "ctx/docs").mkdir()
    first = build_step()
    (workspace / "ctx/docs/guide.txt").write_text("x")
    (workspace / "ctx/NOTES.md").write_text("x")
    second = build_step()
    assert first.inputs.digest == second.inputs.digest
    (workspace / "ctx/KEEP.md").write_text("x")
    third = build_step()
    assert third.inputs.digest != first.inputs.digest


def test_build_failure_cancels_the_other_target(workspace, tmp_path):
    # api fails at once; web's build is slow and must be stopped, not waited for.
    text = (workspace / "topology.yaml").read_text().replace("ctx/Dockerfile\n    image: demo-web", "web.Dockerfile\n    image: demo-web")
    (workspace / "topology.yaml").write_text(text)
    (workspace / "web.Dockerfile").write_text("FROM scratch\n")
    docker = FakeTool(tmp_path / "bin", "docker")
    docker.expect("buildx", "build", "--progress", "plain", "--build-arg", "BASE_REGISTRY=mirror.example:8083",
                  "--provenance=false", "--push", "--metadata-file", ".buildplane/builds/dev-web.json", sleep=30)
    docker.expect("buildx", "build", exit=1, stderr="ERROR: failed to solve: boom\n")
    client, _ = registry_stub(set())
    eng, _ = engine_for(workspace, docker, client, targets=("api", "web"))
    started = time.monotonic()
    summary = eng.run()
    assert time.monotonic() - started < 10
    assert summary.exit_code == 1 and "boom" in summary.error
    out = summary.to_json()["targets"]
    assert out["api"]["build"] == "failed" and out["web"]["build"] in ("failed", "not-run")


def test_second_run_waits_for_the_target_lock(workspace):
    state = StateDir(Path(".buildplane"))
    messages: list[str] = []
    acquired = threading.Event()
    with target_lock(state, "api", messages.append):
        def second():
            with target_lock(state, "api", messages.append):
                acquired.set()
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.4)
        assert not acquired.is_set()
        assert any("waiting" in m for m in messages)
    t.join(5)
    assert acquired.is_set()


def test_sigterm_stops_children_within_two_seconds_and_exits_130(workspace, tmp_path):
    # A registry stand-in on loopback (404 for every manifest), a fake docker whose build hangs.
    import http.server
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/v2/" else 404); self.end_headers()
        do_HEAD = do_GET
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    text = (workspace / "topology.yaml").read_text().replace("registry.example/team", f"127.0.0.1:{port}/team")
    (workspace / "topology.yaml").write_text(text.replace("cache: {import: true, export: true}", "cache: {import: false, export: false}"))
    pidfile = tmp_path / "child.pid"
    docker = FakeTool(tmp_path / "bin", "docker")
    # Hangs in `buildx build` (so SIGTERM has a child to stop); any other call fails as unexpected.
    docker.path.write_text(f'#!/bin/sh\n[ "$1 $2" = "buildx build" ] || {{ echo "unexpected: $*" >&2; exit 97; }}\n'
                           f"echo $$ > {pidfile}\nexec sleep 60\n")
    env = {**os.environ, "PATH": f"{docker.path.parent}:{os.environ['PATH']}"}
    seed_builder(env)
    proc = subprocess.Popen([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "up", "--mode", "dev",
                             "api", "--build-only"], cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        child = int(pidfile.read_text())
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - sent
        assert code == 130
        assert elapsed < 2.5
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.shutdown()


def test_push_failure_parser_on_saved_real_output():
    """buildx 0.13 through a proxy answering 500 to the manifest PUT (tests/registry_proxy.py), saved as printed."""
    lines = (ROOT / "tests/fixtures/buildx-push-500.txt").read_text().splitlines()
    fault = push_failure(lines)
    assert fault is not None and fault.registry.startswith("127.0.0.1:") and fault.status == "500 Internal Server Error"
    assert "/manifests/bp-" in fault.url
    # The report (HEAD during the second tag's push), a reset, and a failure that is not the registry's.
    head = ("ERROR: unexpected status from HEAD request to http://127.0.0.1:15001/v2/fractalops/fractalops-runtime/"
            "manifests/bp-0123: 500 Internal Server Error")
    assert push_failure([head]) == PushFailure("127.0.0.1:15001", "500 Internal Server Error",
                                               "http://127.0.0.1:15001/v2/fractalops/fractalops-runtime/manifests/bp-0123")
    reset = ('ERROR: failed to solve: failed to do request: Put "https://ghcr.io/v2/x/y/blobs/uploads/abc": '
             "read tcp 10.0.0.2:5000->1.2.3.4:443: read: connection reset by peer")
    assert push_failure([reset]).status == "connection reset by peer" and push_failure([reset]).registry == "ghcr.io"
    assert push_failure(["ERROR: failed to solve: process \"/bin/sh -c make\" did not complete successfully: exit code: 2"]) is None
    assert push_failure(["unexpected status from PUT request to https://ghcr.io/v2/x/manifests/t: 401 Unauthorized"]) is None


def test_push_fault_is_retried_then_named(workspace, tmp_path):
    """A fake docker whose push breaks twice: the third build goes through; always broken: named, exit 1."""
    err = "ERROR: unexpected status from HEAD request to http://registry.example/v2/team/demo-api/manifests/bp-x: 503 Service Unavailable\n"
    docker = FakeTool(tmp_path / "bin", "docker").expect("buildx", "build", exit=1, stderr=err, times=2) \
        .expect("buildx", "build", write_metadata=DIGEST)
    client, seen = registry_stub(set())
    eng, logs = engine_for(workspace, docker, client)
    eng.ctx.sleep = lambda s: None
    summary = eng.run()
    assert summary.exit_code == 0, summary.error
    assert len(docker.calls) == 3 and docker.unexpected() == []
    assert sum("answered 503 Service Unavailable during the push; trying again" in line for line in logs) == 2
    always = FakeTool(tmp_path / "bin2", "docker").expect("buildx", "build", exit=1, stderr=err)
    (workspace / "ctx/app.txt").write_text("v2\n")
    eng, logs = engine_for(workspace, always, client)
    eng.ctx.sleep = lambda s: None
    summary = eng.run()
    assert summary.exit_code == 1 and len(always.calls) == 3
    assert "the push to registry registry.example failed 3 times, last with 503 Service Unavailable" in summary.error


def test_registry_client_retries_5xx_and_names_what_still_fails():
    answers = iter([500, 502, 201])
    seen = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.method)
        if req.method == "GET":
            return httpx.Response(200, content=b"{}", headers={"docker-content-digest": DIGEST})
        return httpx.Response(next(answers))

    naps: list[float] = []
    reg = RegistryClient(client=httpx.Client(transport=httpx.MockTransport(handler)), sleep=naps.append)
    assert reg.copy_tag("registry.example/team/a:bp-1", "dev-1") == DIGEST
    assert seen == ["GET", "PUT", "PUT", "PUT"] and naps == [0.25, 0.5]
    down = RegistryClient(client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503))),
                          sleep=lambda s: None)
    with pytest.raises(StepFailed) as err:
        down.manifest_digest("registry.example/team/a:bp-1")
    assert "registry registry.example answered HTTP 503 Service Unavailable to HEAD /v2/team/a/manifests/bp-1 3 times" in err.value.message


def test_builder_capability_is_asked_once_per_builder(tmp_path):
    """The probe (three docker CLI calls) runs once per builder; another builder is asked again."""
    from buildplane.tools.buildx import cached_capability
    asked = []

    def probe():
        asked.append(1)
        return BuilderInfo(True, "builder default (driver docker)", "docker", (0, 13))
    cache = tmp_path / "caps.json"
    env_a = {"DOCKER_CONFIG": str(tmp_path / "none"), "BUILDX_BUILDER": "a"}
    first = cached_capability(cache, probe, env_a)
    assert cached_capability(cache, probe, env_a) == first == probe()
    assert first.push == "docker-push"  # buildx 0.13 on the docker driver pushes every tag twice
    assert len(asked) == 2  # one probe above, one in the comparison
    cache.write_text('{"' + builder_key(env_a) + '": [true, "an older record"]}')  # an older shape: asked again
    assert cached_capability(cache, probe, env_a).version == (0, 13) and len(asked) == 3
    cached_capability(cache, probe, {**env_a, "BUILDX_BUILDER": "remote-pool"})
    assert len(asked) == 4
