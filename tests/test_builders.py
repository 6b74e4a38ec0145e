"""Shared build workers (#17): the builder is an explicit choice — a Docker context or a buildx builder
instance — and every buildx call, push, probe and check of a run goes to it; a builder that is down is
exit 4 before any target starts; max_parallel bounds the builds on it at once."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from buildplane.engine import Engine
from buildplane.errors import BadInput
from buildplane.plan import Options, make_plan
from buildplane.steps.base import BuilderCaps
from buildplane.tools import buildx
from buildplane.tools.builders import BuilderChoice, choose
from buildplane.tools.run import Runner
from buildplane.topology import load
from conftest import BASE_TOPOLOGY
from fakes import registry_stub, run_context, seed_builder


@pytest.fixture(autouse=True)
def _docker_config(tmp_path, monkeypatch):
    """The Docker CLI's config (and so its context store) of the test alone, whatever the lab set."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))


def make_context(_home: Path, name: str) -> None:
    """A Docker context as the docker CLI stores it (`docker context create NAME`)."""
    meta = Path(os.environ["DOCKER_CONFIG"]) / "contexts/meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Endpoints": {"docker": {"Host": "ssh://builder"}}}))


def test_the_choice_flag_then_env_then_topology_and_a_context_is_told_from_an_instance(workspace, monkeypatch):
    home = Path(os.environ["HOME"])
    make_context(home, "worker-1")
    Path("topology.yaml").write_text(BASE_TOPOLOGY.replace("telemetry:", "builder: {name: pool, max_parallel: 2}\ntelemetry:"))
    topo = load("topology.yaml")
    env = {"HOME": str(home), "DOCKER_CONFIG": os.environ["DOCKER_CONFIG"]}
    assert choose(topo, None, env) == BuilderChoice("pool", False, "builder.name in topology.yaml", 2)
    assert choose(topo, None, {**env, "BUILDPLANE_BUILDER": "worker-1"}).context is True
    got = choose(topo, "other", {**env, "BUILDPLANE_BUILDER": "worker-1"})
    assert (got.name, got.source, got.context) == ("other", "--builder", False)
    assert choose(topo, "default", env).name is None  # the environment's own
    with pytest.raises(BadInput, match="--builder 'a b'"):
        choose(topo, "a b", env)
    assert BuilderChoice("worker-1", True).buildx("build") == ["docker", "--context", "worker-1", "buildx", "build"]
    assert BuilderChoice("pool").buildx("build") == ["docker", "buildx", "build", "--builder", "pool"]
    assert BuilderChoice("pool").inspect_argv() == ["docker", "buildx", "inspect", "--bootstrap", "pool"]


def test_every_buildx_call_of_the_plan_goes_to_the_chosen_builder(tools, monkeypatch):
    make_context(Path(os.environ["HOME"]), "worker-1")
    monkeypatch.setenv("BUILDPLANE_WAIT_CACHE", "false")  # the dev export in the background: its argv too
    plan = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), builder="worker-1"),
                     runner=Runner(extra_path=[str(tools["bin"])]))
    build = next(s for s in plan.steps if s.kind == "build")
    assert build.argv()[:5] == ["docker", "--context", "worker-1", "buildx", "build"]
    assert build.export_argv()[:5] == ["docker", "--context", "worker-1", "buildx", "build"]
    assert build.after == ("builder-check",) and plan.steps[-1].id == "builder-check"
    assert "builds on Docker context worker-1 (from --builder)" in plan.notes
    instance = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), builder="pool"),
                         runner=Runner(extra_path=[str(tools["bin"])]))
    argv = next(s for s in instance.steps if s.kind == "build").argv()
    assert argv[:5] == ["docker", "buildx", "build", "--builder", "pool"]


def test_the_capability_answer_is_kept_per_builder():
    env = {"DOCKER_HOST": "unix:///local.sock", "PATH": "/nonexistent"}
    keys = {buildx.builder_key(env, c) for c in (BuilderChoice(), BuilderChoice("w", True), BuilderChoice("w"),
                                                 BuilderChoice("pool"))}
    assert len(keys) == 4
    assert buildx.builder_key(env) == buildx.builder_key(env, BuilderChoice())  # unchanged for the default


def run(tools, client, **opts):
    plan = make_plan(load("topology.yaml"), Options(mode="dev", targets=opts.pop("targets", ("api",)), **opts),
                     runner=Runner(extra_path=[str(tools["bin"])]))
    ctx = run_context(tools["bin"], client)
    return Engine(plan, ctx).run()


def test_a_builder_that_is_down_is_exit_4_before_any_target_starts(tools):
    make_context(Path(os.environ["HOME"]), "worker-1")
    tools["docker"].expect("--context", "worker-1", "buildx", "inspect", "--bootstrap", exit=1,
                           stderr="ERROR: Cannot connect to the Docker daemon at ssh://builder. Is the docker daemon running?\n")
    client, seen = registry_stub(set())
    summary = run(tools, client, builder="worker-1")
    assert summary.exit_code == 4
    assert "Docker context worker-1 (--builder) does not answer" in summary.error
    assert "docker --context worker-1 buildx inspect --bootstrap" in summary.error
    assert not [c for c in tools["docker"].calls if "build" in c]  # nothing built
    assert not [c for c in tools["helm"].calls if c[:1] == ["upgrade"]]  # nothing released
    assert seen == []  # nor any registry asked


def test_a_builder_that_answered_is_not_asked_again_within_the_ttl_and_a_no_op_never(tools):
    make_context(Path(os.environ["HOME"]), "worker-1")
    tools["docker"].expect("--context", "worker-1", "buildx", "build", write_metadata="sha256:" + "ab" * 32)
    running = (Path(__file__).parent / "fixtures/buildx-inspect-running.txt").read_text()
    tools["docker"].expect("--context", "worker-1", "buildx", "inspect", "--bootstrap", stdout=running)
    client, _ = registry_stub(set())
    assert run(tools, client, builder="worker-1").exit_code == 0
    Path("ctx/app.txt").write_text("v2\n")
    assert run(tools, client, builder="worker-1").exit_code == 0
    inspects = [c for c in tools["docker"].calls if "inspect" in c]
    assert len(inspects) == 1  # the second run trusted the first answer
    before = len(tools["docker"].calls)
    plan = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",), builder="worker-1"))
    assert all(s.kind != "builder-check" for s in plan.steps)  # nothing to build: no check
    assert run(tools, client, builder="worker-1").exit_code == 0 and len(tools["docker"].calls) == before


class CountingSlots(threading.BoundedSemaphore):
    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.active = self.most = 0
        self.guard = threading.Lock()

    def acquire(self, blocking=True, timeout=None):
        got = super().acquire(blocking, timeout) if timeout is not None else super().acquire(blocking)
        if got:
            with self.guard:
                self.active += 1
                self.most = max(self.most, self.active)
        return got

    def release(self, n=1):
        with self.guard:
            self.active -= 1
        super().release(n)


@pytest.mark.parametrize("limit", [1, 2])
def test_max_parallel_bounds_the_builds_on_one_builder(tools, limit):
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", write_metadata="sha256:" + "ab" * 32, sleep=0.4)
    seed_builder(dict(os.environ))
    plan = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api", "web"), build_only=True),
                     runner=Runner(extra_path=[str(tools["bin"])]))
    ctx = run_context(tools["bin"], registry_stub(set())[0])
    logs: list[str] = []
    ctx.log = logs.append
    ctx.builder = BuilderCaps(ctx.builder.probe, max_parallel=limit)
    counting = ctx.builder._slots = CountingSlots(limit)
    assert Engine(plan, ctx).run().exit_code == 0
    assert len([c for c in tools["docker"].calls if c[:2] == ["buildx", "build"]]) == 2
    assert counting.most == limit  # one at a time, or both at once (each build takes 0.4 s)
    assert any("waiting for a free slot" in m for m in logs) is (limit == 1), logs


def test_without_max_parallel_no_slot_is_taken():
    caps = BuilderCaps(lambda: None)
    with caps.slot(lambda: pytest.fail("waited")):
        with caps.slot(lambda: pytest.fail("waited")):
            assert caps._slots is None


@pytest.mark.parametrize("fixture,problem", [
    ("buildx-inspect-running.txt", None),
    ("buildx-inspect-daemon-gone.txt", "Cannot connect to the Docker daemon at unix:///tmp/gone.sock. Is the docker daemon running?"),
    ("buildx-inspect-no-builder.txt", 'no builder "nope" found'),
])
def test_inspect_output_says_whether_the_builder_answers(fixture, problem):
    """Saved real `docker [--context X] buildx inspect --bootstrap` output (buildx 0.29.1): it exits 0 for a
    context whose daemon is gone, so the output decides."""
    from buildplane.tools.builders import inspect_problem
    assert inspect_problem((Path(__file__).parent / "fixtures" / fixture).read_text()) == problem
    assert inspect_problem("Name: x\nNodes:\nName: x\nStatus: inactive\n") == "its nodes are inactive"


def test_a_builder_gone_during_the_build_is_exit_4_naming_it(tools):
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", exit=1,
                           stderr="ERROR: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                                  "Is the docker daemon running?\n")
    seed_builder(dict(os.environ))
    summary = run(tools, registry_stub(set())[0])
    assert summary.exit_code == 4
    assert summary.error.startswith("the environment's builder does not answer: Cannot connect to the Docker daemon")
    assert "docker buildx inspect --bootstrap" in summary.error


def test_a_probe_that_cannot_reach_the_builder_is_exit_4_naming_it(tools, monkeypatch):
    tools["docker"].expect("buildx", "inspect", exit=1,
                           stderr="Cannot connect to the Docker daemon at unix:///gone.sock. Is the docker daemon running?\n")
    monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")  # python-on-whales runs `docker` from PATH
    plan = make_plan(load("topology.yaml"), Options(mode="dev", targets=("api",)),
                     runner=Runner(extra_path=[str(tools["bin"])]))
    ctx = run_context(tools["bin"], registry_stub(set())[0])
    ctx.builder = BuilderCaps(lambda: buildx.cached_capability(ctx.state.builder_caps))
    summary = Engine(plan, ctx).run()
    assert summary.exit_code == 4
    assert "the environment's builder does not answer: Cannot connect to the Docker daemon" in summary.error
    assert not [c for c in tools["docker"].calls if c[:2] == ["buildx", "build"]]
