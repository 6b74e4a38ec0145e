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


@command("up")
def up_cmd(args, topology) -> int:
    from pathlib import Path

    from .engine import Engine
    from .freshness import STATE_DIR
    from .steps.build import BuildEnv
    from .steps.release import ReleaseEnv
    from .tools.registry import RegistryClient
    from .tools.run import Runner

    topo, _ = topology(args)
    log = _stderr
    runner = Runner(log=(lambda line: None))
    plan = make_plan(topo, options(args), runner=runner)
    state = Path(STATE_DIR)
    registry = RegistryClient(plain_http=frozenset(topo.registries.plain_http))
    engine = Engine(
        plan,
        build_env=BuildEnv(runner=runner, registry=registry, state_dir=state, log=log, force=args.force,
                           progress=lambda target, line: print(f"[{target}] {line}", file=sys.stderr)),
        release_env=ReleaseEnv(runner=runner, state_dir=state, log=log, force=args.force),
        state_dir=state, log=log,
    )
    summary = engine.run()
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        for name, target in summary.to_json()["targets"].items():
            print(f"{name}: build {target['build']}, release {target['release']} — {target['image']}", file=sys.stderr)
    if summary.error and summary.exit_code != 130:
        print(f"buildplane: {summary.error}", file=sys.stderr)
    elif summary.exit_code == 130:
        print("buildplane: interrupted", file=sys.stderr)
    return summary.exit_code


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
