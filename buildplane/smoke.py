"""`buildplane smoke`: the route smoke of some targets (in parallel), or the browser smoke of the portal,
reported as Build Plane Events like any pipeline step."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .engine import RunSummary, TargetOutcome
from .errors import BadInput
from .plan import Plan, Step, select_targets
from .specs import SmokeSpec
from .steps.browser import browser_smoke, find_chromium, require_playwright
from .steps.result import StepResult
from .steps.smoke import run_route_smoke
from .telemetry.reporter import Reporter
from .topology import Topology


def smoke_targets(topo: Topology, names: tuple[str, ...], browser: bool) -> list[str]:
    has = (lambda t: t.browser is not None) if browser else (lambda t: bool(t.smoke))
    if names:
        chosen = select_targets(topo, names)
        lacking = [n for n in chosen if not has(topo.targets[n])]
        if lacking:
            what = "browser" if browser else "smoke"
            raise BadInput(f"{topo.source}: targets.{lacking[0]}.{what}: not set; "
                           f"targets with it: {', '.join(n for n, t in topo.targets.items() if has(t)) or 'none'}")
        return chosen
    chosen = [n for n, t in topo.targets.items() if has(t) and (browser or not t.optional)]
    if not chosen:
        raise BadInput(f"{topo.source}: no target has {'a browser check' if browser else 'smoke routes'}")
    return chosen


def run_smoke(topo: Topology, names: tuple[str, ...], *, browser: bool, deadline_s: float, reporter: Reporter,
              log: Callable[[str], None]) -> RunSummary:
    targets = smoke_targets(topo, names, browser)
    chromium = find_chromium() if browser else None  # exit 4 before anything runs
    if browser:
        require_playwright()
    plan = Plan(mode="dev", targets=targets)
    summary = RunSummary("dev", uuid.uuid4().hex[:16], "succeeded", 0.0)
    started = time.monotonic()
    reporter.run_started(plan, summary.run_id)

    def one(name: str) -> StepResult:
        t = topo.targets[name]
        spec = SmokeSpec(name, t.smoke, deadline_s)
        step = Step(f"smoke:{name}", "smoke", name, spec)
        reporter.step_started(plan, summary.run_id, step)
        if browser:
            result = browser_smoke(name, t.browser.url, t.browser.selector, deadline_s=deadline_s, chromium=chromium)
        else:
            result = run_route_smoke(spec)
        reporter.step_finished(plan, summary.run_id, step, result)
        log(f"{name}: smoke {'passed' if result.ok else 'failed'} — {result.reason}")
        return result

    if browser:  # one browser at a time: Chromium is heavy on a 2-core machine
        results = [one(n) for n in targets]
    else:
        with ThreadPoolExecutor(max_workers=len(targets)) as pool:
            results = list(pool.map(one, targets))
    for name, result in zip(targets, results):
        summary.targets[name] = TargetOutcome(smoke=result)
    failed = [r for r in results if not r.ok]
    if failed:
        summary.outcome, summary.exit_code = "failed", 1
        summary.error = "; ".join(f"{r.target}: {r.reason}" for r in failed)
    summary.duration_s = time.monotonic() - started
    reporter.run_finished(summary)
    return summary
