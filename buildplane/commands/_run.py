"""Running a plan, the same way for `up`, `smoke` and `handback`: the one engine runs it with the
command's reporter, the sinks are flushed within their budget, the summary is printed once.
(`up` starts its reporter before planning, so a network sink gets ready while the plan hashes inputs.)"""
from __future__ import annotations

from dataclasses import dataclass

from ..engine import Engine
from ..plan import Plan
from ..state import StateDir
from ..steps.base import RunContext
from ..summary import RunSummary
from ..telemetry.setup import reporter_from_env
from ._output import finish_telemetry, stderr, print_json


@dataclass
class Outcome:
    summary: RunSummary
    doc: dict  # the summary's JSON, with the telemetry report
    code: int


def start_reporter(service_name: str, state: StateDir):
    return reporter_from_env(service_name, state.events)


def run_plan(plan: Plan, ctx: RunContext, reporter, *, as_json: bool) -> Outcome:
    """Run `plan`; with --json print exactly one JSON object on stdout."""
    summary = Engine(plan, ctx, reporter=reporter).run()
    doc, code = finish_telemetry(reporter, summary.to_json(), summary.exit_code)
    if as_json:
        print_json(doc)
    return Outcome(summary, doc, code)


def context(state: StateDir, **seams) -> RunContext:
    return RunContext(state=state, log=stderr, **seams)


def say_failure(outcome: Outcome, prefix: str = "") -> None:
    if outcome.summary.exit_code == 130:
        stderr("buildplane: interrupted")
    elif outcome.summary.error:
        stderr(f"buildplane: {prefix}{outcome.summary.error}")
