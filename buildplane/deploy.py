"""Deploy mode: stop Tilt if it runs, then hand every canonical app back to Argo CD, in parallel.

Never calls kubectl or Helm: Argo CD's API is the only way this mode touches the cluster.
"""
from __future__ import annotations

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from .plan import Plan, Step
from .specs import HandbackSpec, StopTiltSpec
from .steps.handback import AppReport, Clock, hand_back
from .telemetry.reporter import NullReporter, Reporter
from .tools.argocd import ArgoClient
from .tools import tilt
from .tools.run import Runner


@dataclass
class DeploySummary:
    run_id: str
    apps: list[AppReport] = field(default_factory=list)
    tilt: str = ""
    duration_s: float = 0.0
    mode: str = "deploy"
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.apps) and all(a.ok for a in self.apps)

    @property
    def outcome(self) -> str:
        return "succeeded" if self.ok else "failed"

    @property
    def exit_code(self) -> int:
        if self.ok:
            return 0
        codes = [a.exit_code for a in self.apps if not a.ok]
        return 4 if 4 in codes else 1

    def to_json(self) -> dict:
        return {"mode": self.mode, "run_id": self.run_id, "outcome": self.outcome, "duration_s": round(self.duration_s, 3),
                "tilt": self.tilt, "apps": {a.app: a.to_json() for a in self.apps}}


def run_deploy(plan: Plan, client: ArgoClient, *, runner: Runner, dev_tag: re.Pattern, log: Callable[[str], None],
               reporter: Reporter | None = None, clock: Clock | None = None) -> DeploySummary:
    reporter = reporter or NullReporter()
    spec = next(s.spec for s in plan.steps if isinstance(s.spec, HandbackSpec))
    clock = clock or Clock(poll_s=spec.poll_s)
    summary = DeploySummary(uuid.uuid4().hex[:16])
    started = time.monotonic()
    reporter.run_started(plan, summary.run_id)
    stop = next((s.spec for s in plan.steps if isinstance(s.spec, StopTiltSpec)), None)
    summary.tilt = tilt.stop(stop.record) if stop else "Tilt not part of this plan"
    log(summary.tilt)

    def one(app: str) -> AppReport:
        step = Step(f"handback:{app}", "handback", app, spec)
        reporter.step_started(plan, summary.run_id, step)
        report = hand_back(client, app, timeout_s=spec.timeout_s, prune=spec.prune, dev_tag=dev_tag, clock=clock, log=log)
        reporter.step_finished(plan, summary.run_id, step, report.result())
        return report

    with ThreadPoolExecutor(max_workers=len(spec.apps), thread_name_prefix="argo") as pool:
        summary.apps = list(pool.map(one, spec.apps))
    summary.duration_s = time.monotonic() - started
    failed = [a for a in summary.apps if not a.ok]
    if failed:
        messages = {a.message for a in failed}
        if len(failed) > 1 and len(messages) == 1:  # e.g. a bad token: say it once
            summary.error = f"{', '.join(a.app for a in failed)}: {messages.pop()}"
        else:
            summary.error = "; ".join(f"{a.app}: {a.message}" for a in failed)
    reporter.run_finished(summary)
    return summary


def report_lines(summary: DeploySummary) -> list[str]:
    """The per-app table people read: name, sync, health, revision, time, Argo's message on failure."""
    from .render import table

    rows = [("APP", "SYNC", "HEALTH", "REVISION", "TOOK", "ACTION", "")]
    rows += [(a.app, a.sync, a.health, a.revision[:12] or "-", f"{a.duration_s:.1f}s", a.action, "" if a.ok else a.message)
             for a in summary.apps]
    return table(rows)
