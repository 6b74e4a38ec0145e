"""The one run loop: `after` decides the order, independent steps overlap, a failed step's followers
never run; and the process runner refuses every mutating kubectl verb before anything starts."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from buildplane.engine import Engine
from buildplane.errors import Refused
from buildplane.plan import Plan
from buildplane.state import StateDir
from buildplane.steps.base import RunContext, Status, StepResult
from buildplane.tools.run import Runner
from fakes import FakeTool


@dataclass
class Timed:
    """A step that sleeps and records when it ran (the engine needs nothing else of a step)."""

    id: str
    after: tuple[str, ...] = ()
    seconds: float = 0.15
    fail: bool = False
    kind: str = "build"
    lock: str | None = None
    note: str = ""
    reported: bool = True
    spans: dict = field(default_factory=dict)

    @property
    def target(self) -> str:
        return self.id

    def describe(self) -> dict:
        return {}

    def run(self, ctx: RunContext) -> StepResult:
        start = time.monotonic()
        time.sleep(self.seconds)
        self.spans[self.id] = (start, time.monotonic())
        return StepResult(self.kind, self.id, Status.FAILED if self.fail else Status.SUCCEEDED, "done")


def run(steps: list[Timed], *, fail_fast: bool = True):
    plan = Plan(mode="dev", targets=[s.id for s in steps], steps=list(steps), fail_fast=fail_fast)
    return Engine(plan, RunContext(state=StateDir(Path(".buildplane")), log=lambda m: None)).run()


def test_after_orders_steps_and_independent_ones_overlap(workspace):
    spans: dict = {}
    steps = [Timed("a", spans=spans), Timed("b", ("a",), spans=spans), Timed("c", ("a",), spans=spans),
             Timed("d", ("b", "c"), spans=spans), Timed("e", seconds=0.3, spans=spans)]
    summary = run(steps)
    assert summary.exit_code == 0
    assert spans["b"][0] >= spans["a"][1] and spans["c"][0] >= spans["a"][1]
    assert spans["d"][0] >= max(spans["b"][1], spans["c"][1])
    assert spans["e"][0] < spans["a"][1]  # nothing before e: it ran beside a
    assert abs(spans["b"][0] - spans["c"][0]) < 0.1  # b and c both waited for a only, and ran together


def test_a_failed_step_stops_its_followers_but_not_an_unrelated_step(workspace):
    spans: dict = {}
    steps = [Timed("a", fail=True, spans=spans), Timed("b", ("a",), spans=spans), Timed("c", ("b",), spans=spans),
             Timed("x", seconds=0.05, spans=spans)]
    summary = run(steps, fail_fast=False)
    assert {k: r.status for k, r in summary.results.items()} == {
        "a": Status.FAILED, "b": Status.NOT_RUN, "c": Status.NOT_RUN, "x": Status.SUCCEEDED}
    assert set(spans) == {"a", "x"} and summary.exit_code == 1 and summary.error == "a: done"


def test_fail_fast_starts_nothing_after_the_first_failure(workspace):
    spans: dict = {}
    steps = [Timed("a", seconds=0.05, fail=True, spans=spans), Timed("late", ("slow",), spans=spans),
             Timed("slow", seconds=0.3, spans=spans)]
    summary = run(steps, fail_fast=True)
    assert summary.results["late"].status == Status.NOT_RUN and "late" not in spans
    assert summary.error == "a: build failed — done"


@pytest.mark.parametrize("argv", [["kubectl", "delete", "pod", "x"], ["kubectl", "--context", "lab", "apply", "-f", "x"],
                                  ["kubectl", "set", "image", "deploy/x", "a=b"], ["kubectl", "rollout", "restart", "x"]])
def test_the_runner_refuses_mutating_kubectl_before_it_starts(tmp_path, argv):
    kubectl = FakeTool(tmp_path / "bin", "kubectl").expect("delete").expect("apply").expect("set").expect("rollout")
    with pytest.raises(Refused) as err:
        Runner(extra_path=[str(kubectl.path.parent)]).run(argv, timeout=10)
    assert err.value.rule == "kubectl-read-only" and kubectl.calls == []


def test_the_runner_lets_read_only_kubectl_through(tmp_path):
    kubectl = FakeTool(tmp_path / "bin", "kubectl").expect("get", stdout="pod/a\n")
    out = Runner(extra_path=[str(kubectl.path.parent)]).run(["kubectl", "get", "pods", "-n", "x"], timeout=10)
    assert out.stdout == "pod/a\n" and kubectl.calls == [["get", "pods", "-n", "x"]]
