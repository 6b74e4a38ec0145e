"""`buildplane restart TARGET…`: a rolling restart through Helm (steps/restart.py), on the one engine.

Guarded like a release: the mode's own namespace only (never a protected one), the allowed kube context
only, dev — or staging with --apply; refused (exit 3) before Helm is called.
"""
from __future__ import annotations

from pathlib import Path

from .. import contract, guards
from ..errors import Refused
from ..plan import Plan
from ..state import StateDir
from ..steps.restart import RestartStep
from ..tools import helm as helm_tool
from ..tools.run import Runner
from ._cluster import cluster, released_targets
from ._output import stderr
from ._run import context, run_plan, say_failure, start_reporter


def restart_plan(topo, args, state: StateDir, runner: Runner) -> Plan:
    if args.mode == "staging" and not args.apply:
        raise Refused("staging-apply", "staging changes nothing live without --apply: "
                                       f"`buildplane restart --mode staging --apply {' '.join(args.targets)}`")
    mode = topo.mode(args.mode)
    names = released_targets(topo, list(args.targets))  # bad input (exit 2) first
    guards.check_release_namespace(topo, args.mode, mode.namespace)
    where = cluster(topo, args.mode, args.kube_context)
    plan = Plan(mode=args.mode, targets=names, kind="restart", namespace=where.namespace, fail_fast=False)
    major = helm_tool.major_version(runner, state.helm_version) or 4
    for name in names:
        plan.steps.append(RestartStep(
            target=name, mode=args.mode, release=contract.release_name(topo, name),
            chart=contract.project_path(Path.cwd(), topo.targets[name].chart), namespace=where.namespace,
            kube_context=where.context, timeout=mode.helm_timeout, history_max=mode.history_max, helm_major=major,
            state=state, cluster_scoped=topo.targets[name].cluster_scoped, lock=name))
    return plan


def run(args, topology) -> int:
    topo, _ = topology(args)
    state = StateDir.from_env()
    state.check_writable()
    runner = Runner(ledger=state.children)
    plan = restart_plan(topo, args, state, runner)
    outcome = run_plan(plan, context(state, runner=runner), start_reporter(topo.telemetry.service_name, state),
                       as_json=args.json)
    if not args.json:
        for name in plan.targets:
            r = outcome.summary.result(f"restart:{name}")
            stderr(f"{name}: {r.reason if r else 'not run'}")
    say_failure(outcome)
    return outcome.code
