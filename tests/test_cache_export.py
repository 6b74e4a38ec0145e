"""The dev loop's registry cache export, off the critical path (#13): started after the release as a
detached process, recorded, superseded by a later build, waited for with --wait-cache, shown by status,
ended with a `cache.export` event. The builder is a fake docker (it records argv, fails on the unexpected)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from buildplane.commands.status import export_sentence
from buildplane.engine import Engine
from buildplane.plan import Options, make_plan
from buildplane.state import StateDir
from buildplane.tools import cache_export
from buildplane.tools.run import Runner
from buildplane.tools.tilt import start_ticks
from buildplane.topology import load
from fakes import DIGEST, registry_stub, run_context

STATE = StateDir(Path(".buildplane"))


@pytest.fixture
def background(tools, monkeypatch):
    """The dev default: export in the background; the detached process finds the fake docker on PATH."""
    monkeypatch.delenv("BUILDPLANE_WAIT_CACHE")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")
    return tools


def run_dev(tools, *, wait_cache=False, client=None, logs=None):
    runner = Runner(extra_path=[str(tools["bin"])])
    plan = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), build_only=True,
                                                    wait_cache=wait_cache), runner=runner)
    ctx = run_context(tools["bin"], client or registry_stub(set())[0], logs=logs)
    return plan, Engine(plan, ctx).run()


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def fake_builder(docker, **export):
    """The build pushes (metadata written); the export — the build's flags, then `--file`, cache only —
    behaves as given. The export rule comes first: the build's rule would match it too."""
    docker.rules.clear()
    docker.expect("buildx", "build", "--progress", "plain", "--build-arg", "BASE_REGISTRY=mirror.example:8083",
                  "--provenance=false", "--file", **export)
    docker.expect("buildx", "build", write_metadata=DIGEST)


def export_calls(docker):
    return [c for c in docker.calls if "type=cacheonly" in c]


def events(name):
    path = STATE.events
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["name"] == name] if path.exists() else []


def test_dev_exports_after_the_build_in_the_background_and_says_how_it_ended(background):
    docker = background["docker"]
    fake_builder(docker, sleep=0.5)
    plan, summary = run_dev(background)
    assert summary.exit_code == 0, summary.error
    build_argv = next(c for c in docker.calls if "--push" in c)
    assert "--cache-to" not in build_argv and "--cache-from" in build_argv  # the push does not wait for it
    out = summary.to_json()["targets"]["api"]
    assert out["cache_export"]["when"] == "background" and out["cache_export"]["pid"] > 0
    record = cache_export.current(STATE, "dev", "api")
    assert record["status"] == "running" and record["run_id"] == summary.run_id  # written before it may start
    done = wait_for(lambda: (r := cache_export.current(STATE, "dev", "api"))["status"] != "running" and r)
    assert done["status"] == "succeeded" and done["duration_s"] >= 0.5
    argv = export_calls(docker)[0]
    assert argv[argv.index("--cache-to") + 1] == ("type=registry,ref=cache.example:8082/team/buildcache/dev/api,mode=max,"
                                                  "registry.insecure=true")  # plain_http, off loopback
    assert "--push" not in argv and "--tag" not in argv and "--cache-from" not in argv
    [event] = wait_for(lambda: events("cache.export"))
    attrs = event["attributes"]
    assert attrs["cicd.pipeline.run.id"] == summary.run_id and attrs["buildplane.target"] == "api"
    assert attrs["cicd.pipeline.task.run.result"] == "success" and attrs["buildplane.duration_ms"] >= 500
    assert attrs["buildplane.cache.scope"] == "dev/api"
    assert docker.unexpected() == []


def test_a_later_build_supersedes_a_running_export_without_waiting_for_it(background):
    docker = background["docker"]
    # An export that runs until stopped, then takes 2 s to stop (a buildx finishing its last request).
    fake_builder(docker, until_signalled=True, term_grace=2.0)
    logs: list[str] = []
    run_dev(background)
    first = wait_for(lambda: (r := cache_export.current(STATE, "dev", "api")) and len(export_calls(docker)) and r)
    Path("ctx/app.txt").write_text("v2\n")
    _, summary = run_dev(background, logs=logs)
    assert summary.exit_code == 0, summary.error
    build = next(r for r in summary.results.values() if r.kind == "build")
    assert build.duration_s < 1.0  # not the 2 s the old export takes to stop: the build did not wait for it
    assert any("stopping the cache export still running" in m and str(first["pid"]) in m for m in logs)
    second = cache_export.current(STATE, "dev", "api")
    assert second["pid"] != first["pid"] and second["status"] == "running"
    # The new export starts its buildx only once the old one is gone: the cache ref ends at the newest export.
    wait_for(lambda: len(export_calls(docker)) == 2, timeout=20)
    assert start_ticks(first["pid"]) != first["ticks"]
    superseded = wait_for(lambda: events("cache.export"))
    assert superseded[0]["attributes"]["cicd.pipeline.task.run.result"] == "cancellation"
    # The old export's end did not overwrite the record the new one owns.
    assert cache_export.current(STATE, "dev", "api")["pid"] == second["pid"]
    assert cache_export.current(STATE, "dev", "api")["status"] == "running"
    cache_export.supersede(STATE, "dev", "api", logs.append)  # leave nothing running behind the test
    assert cache_export.current(STATE, "dev", "api")["status"] == "superseded"


def test_wait_cache_exports_in_the_build_and_waits_for_an_export_left_running(background):
    docker = background["docker"]
    fake_builder(docker, sleep=1.0)
    run_dev(background)
    assert wait_for(lambda: cache_export.current(STATE, "dev", "api"))["status"] == "running"
    # Nothing changed: the build is fresh; --wait-cache returns only once the running export has ended.
    plan, summary = run_dev(background, wait_cache=True)
    assert summary.exit_code == 0, summary.error
    assert "export inside the build (--wait-cache)" in " ".join(plan.notes)
    out = summary.to_json()["targets"]["api"]
    assert out["build"] == "fresh" and out["cache_export"]["status"] == "succeeded"
    assert cache_export.current(STATE, "dev", "api")["status"] == "succeeded"
    # and a build under --wait-cache carries the export itself
    Path("ctx/app.txt").write_text("v3\n")
    run_dev(background, wait_cache=True)
    assert "--cache-to" in docker.calls[-1] and "--push" in docker.calls[-1]


def test_a_failed_export_is_recorded_and_status_names_it(background, run_cli):
    docker = background["docker"]
    fake_builder(docker, exit=1, stderr="ERROR: failed to solve: error writing manifest blob: 403 Forbidden\n")
    run_dev(background)
    done = wait_for(lambda: (r := cache_export.current(STATE, "dev", "api"))["status"] != "running" and r)
    assert done["status"] == "failed" and "403 Forbidden" in done["error"]
    res = run_cli("--topology", "topology.yaml", "status", "--mode", "dev", "api")
    line = next(ln for ln in res.out.splitlines() if "cache export" in ln)
    assert "FAILED" in line and "403 Forbidden" in line and "--wait-cache" in line
    doc = json.loads(run_cli("--topology", "topology.yaml", "status", "--mode", "dev", "--json", "api").out)
    assert doc["targets"]["api"]["cache_export"]["status"] == "failed"
    [event] = wait_for(lambda: events("cache.export"))
    assert event["attributes"]["cicd.pipeline.task.run.result"] == "failure" and event["severity"] == "ERROR"


def test_an_export_killed_without_a_word_is_reported_failed(workspace):
    STATE.cache_export("dev", "api").parent.mkdir(parents=True, exist_ok=True)
    STATE.cache_export("dev", "api").write_text(json.dumps({"status": "running", "pid": 2 ** 22 + 7, "ticks": 1,
                                                           "ref": "c/x", "mode": "dev", "target": "api"}))
    record = cache_export.current(STATE, "dev", "api")
    assert record["status"] == "failed" and "killed" in record["error"]
    assert "FAILED" in export_sentence(record, time.time())
    assert cache_export.supersede(STATE, "dev", "api", print) is False  # nothing alive to stop


def test_staging_and_ci_export_inside_the_build(background, monkeypatch):
    staging = make_plan(load("topology.yaml"), Options(mode="staging", targets=("api",), build_only=True,
                                                      remote_cache=True))
    assert [s.kind for s in staging.steps] == ["build", "tag"] and "--cache-to" in staging.steps[0].argv()
    monkeypatch.setenv("CI", "true")
    dev = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), build_only=True))
    assert "--cache-to" in dev.steps[0].argv()
    assert any("export inside the build (CI: the next machine needs the cache)" in n for n in dev.notes)
    monkeypatch.setenv("CI", "false")
    dev = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), build_only=True))
    assert "--cache-to" not in dev.steps[0].argv() and dev.steps[0].exports_in_background
