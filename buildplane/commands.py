"""The CLI's commands: each turns parsed args into calls on the engine's modules and prints the result."""
from __future__ import annotations

import json
import sys

from . import resources as resources_mod
from .cli import command
from .plan import Options, make_plan
from .render import plan_text


def options(args) -> Options:
    return Options(mode=args.mode, targets=tuple(args.targets), build_only=args.build_only, apply=args.apply,
                   force=args.force, kube_context=args.kube_context, namespace=args.namespace)


@command("plan")
def plan_cmd(args, topology) -> int:
    topo, _ = topology(args)
    plan = make_plan(topo, options(args))
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(plan_text(plan, topo.name))
    return 0


@command("resources")
def resources_cmd(args, topology) -> int:
    topo, path = topology(args)
    print(json.dumps(resources_mod.tilt_resources(topo, path), indent=2))
    return 0


@command("doctor")
def doctor_cmd(args, topology) -> int:
    from .doctor import run_checks

    topo, _ = topology(args)
    checks = run_checks(topo)
    worst = 0
    for check in checks:
        mark = "ok " if check.ok else "!! "
        print(f"{mark}{check.name}: {check.detail}" + ("" if check.ok else f" — fix: {check.fix}"))
        if not check.ok and check.required:
            worst = 4
    return worst
