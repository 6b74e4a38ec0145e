"""`buildplane smoke`: the targets' public routes (in parallel), or their page in a real Chromium."""
from __future__ import annotations

from ..plan import smoke_plan
from ..state import StateDir
from ._run import context, run_plan, say_failure, start_reporter


def run(args, topology) -> int:
    topo, _ = topology(args)
    state = StateDir.from_env()
    state.check_writable()
    mode = topo.mode(args.mode)  # exit 2 when the topology has no such mode
    plan = smoke_plan(topo, tuple(args.targets), browser=args.browser, mode=args.mode,
                      deadline_s=args.deadline or mode.smoke_deadline_s)
    reporter = start_reporter(topo.telemetry.service_name, state)
    outcome = run_plan(plan, context(state), reporter, as_json=args.json)
    say_failure(outcome, "smoke failed: ")
    return outcome.code
