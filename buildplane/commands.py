"""The CLI's commands: each turns parsed args into calls on the engine's modules and prints the result."""
from __future__ import annotations

import json
import sys

from . import resources as resources_mod
from .cli import command
from .plan import Options, make_plan
from .errors import BadInput
from .render import plan_text


def options(args) -> Options:
    return Options(mode=args.mode, targets=tuple(args.targets), build_only=args.build_only, apply=args.apply,
                   force=args.force, kube_context=args.kube_context, namespace=args.namespace,
                   remote_cache=args.remote_cache)


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
    from .steps.smoke import run_route_smoke
    from .tools.registry import RegistryClient
    from .tools.run import Runner

    if args.mode == "deploy":
        if args.targets or args.build_only or args.apply:
            make_plan(topology(args)[0], options(args))  # raises the one-line BadInput
        args.timeout = None
        return handback_cmd(args, topology)
    topo, _ = topology(args)
    log = _stderr
    state = Path(STATE_DIR)
    # Started first, so a network sink gets ready while the plan hashes the inputs.
    reporter = reporter_from_env(topo.telemetry.service_name, state)
    runner = Runner(log=(lambda line: None))
    plan = make_plan(topo, options(args), runner=runner)
    registry = RegistryClient(plain_http=frozenset(topo.registries.plain_http))
    engine = Engine(
        plan,
        build_env=BuildEnv(runner=runner, registry=registry, state_dir=state, log=log, force=args.force,
                           progress=lambda target, line: print(f"[{target}] {line}", file=sys.stderr)),
        release_env=ReleaseEnv(runner=runner, state_dir=state, log=log, force=args.force),
        state_dir=state, log=log, reporter=reporter, smoke_runner=run_route_smoke,
    )
    summary = engine.run()
    doc, code = finish_telemetry(reporter, summary.to_json(), summary.exit_code)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for line in outcome_lines(doc, plan.namespace):
            print(line)
    if summary.error and summary.exit_code != 130:
        print(f"buildplane: {summary.error}", file=sys.stderr)
    elif summary.exit_code == 130:
        print("buildplane: interrupted", file=sys.stderr)
    return code


def outcome_lines(doc: dict, namespace: str | None) -> list[str]:
    """What each target's run built and released, in one line each (stdout: what make and Tilt show)."""
    out = []
    for name, t in doc["targets"].items():
        release = t["release"]
        if release == "applied":
            release = f"released into {namespace} (revision {t['revision']})"
        elif release == "fresh":
            release = f"release in {namespace} unchanged"
        elif release == "not-run":
            release = "not released"
        else:
            release = f"release {release}"
        out.append(f"{name}: build {t['build']}, {release}, smoke {t['smoke']} — {t['image']}")
    return out


def reporter_from_env(service_name: str, state):
    # Imported on use: `plan` and `resources` (Tilt's start-up) need no sink code.
    from .telemetry.setup import reporter_from_env as make

    return make(service_name, state)


def finish_telemetry(reporter, doc: dict, code: int) -> tuple[dict, int]:
    """Flush the sinks (bounded), put what they sent and lost in the summary; strict mode fails on a loss."""
    report = reporter.close()
    doc = {**doc, "telemetry": report.to_json()}
    if report.dropped:
        print(f"buildplane: telemetry: {report.dropped} event(s) dropped — " + "; ".join(report.failed_sinks()),
              file=sys.stderr)
    if report.strict and report.failed_sinks() and code == 0:
        print("buildplane: FRACTALOPS_BUILD_EVENTS_STRICT=true and telemetry sink "
              + "; ".join(report.failed_sinks()), file=sys.stderr)
        doc["outcome"], code = "failed", 1
    return doc, code


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@command("status")
def status_cmd(args, topology) -> int:
    from pathlib import Path

    from .freshness import STATE_DIR
    from .plan import select_targets
    from .status import status

    topo, _ = topology(args)
    names = select_targets(topo, tuple(args.targets)) if args.targets else list(topo.targets)
    results = status(topo, args.mode, names, Path.cwd(), Path(STATE_DIR))
    if args.json:
        print(json.dumps({"mode": args.mode, "targets": {r.target: r.to_json() for r in results}}, indent=2))
    else:
        for r in results:
            print(f"{r.target}: {r.state} — {r.sentence}")
    return 0


@command("explain")
def explain_cmd(args, topology) -> int:
    from pathlib import Path

    from .explain import explain

    topo, _ = topology(args)
    results = explain(topo, args.paths, Path.cwd())
    if args.json:
        print(json.dumps({"paths": [r.to_json() for r in results]}, indent=2))
    else:
        for r in results:
            print(r.line())
    return 0


@command("handback")
def handback_cmd(args, topology) -> int:
    from pathlib import Path

    from . import contract
    from .deploy import report_lines, run_deploy
    from .freshness import STATE_DIR
    from .tools.argocd import ArgoClient
    from .tools.run import Runner

    topo, _ = topology(args)
    runner = Runner(log=(lambda line: None))
    plan = make_plan(topo, Options(mode="deploy", timeout_s=args.timeout), runner=runner)
    spec = plan.steps[-1].spec
    client = ArgoClient(spec.server, token_env=spec.token_env, username_env=spec.username_env,
                        password_env=spec.password_env, ca_file=spec.ca_file)
    reporter = reporter_from_env(topo.telemetry.service_name, Path(STATE_DIR))
    try:
        summary = run_deploy(plan, client, runner=runner, dev_tag=contract.dev_tag_regex(topo), log=_stderr,
                             reporter=reporter)
    finally:
        client.close()
    doc, code = finish_telemetry(reporter, summary.to_json(), summary.exit_code)
    if args.json:
        print(json.dumps(doc, indent=2))
    for line in report_lines(summary):
        print(line, file=sys.stderr if args.json else sys.stdout)
    if not summary.ok:
        print(f"buildplane: handback failed: {summary.error}", file=sys.stderr)
    return code


@command("events")
def events_cmd(args, topology) -> int:
    import os
    import time
    from pathlib import Path

    from .errors import BadInput
    from .freshness import STATE_DIR
    from .telemetry import stats
    from .telemetry.setup import EVENTS_FILE, clickhouse_settings

    since = stats.parse_since(args.since, time.time_ns())
    path = Path(STATE_DIR) / EVENTS_FILE
    if args.action == "tail":
        if args.clickhouse or args.html:
            raise BadInput("events tail reads the local file; --clickhouse and --html belong to events stats")
        for e in stats.read_events(path, since)[-max(args.n, 0):] if args.n > 0 else []:
            if args.json:
                print(json.dumps(e))
            else:
                a = e["attributes"]
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time_unix_nano"] / 1e9))
                what = a.get("cicd.pipeline.task.name") or a.get("cicd.pipeline.name", "")
                result = a.get("cicd.pipeline.task.run.result") or a.get("cicd.pipeline.result") or ""
                ms = f" {a['buildplane.duration_ms']} ms" if "buildplane.duration_ms" in a else ""
                reason = f" — {a['buildplane.reason']}" if a.get("buildplane.reason") else ""
                print(f"{when} {a.get('cicd.pipeline.run.id', '')[:8]} {e['name']:<13} {what} {result}{ms}{reason}".rstrip())
        return 0
    local = stats.read_events(path, since) if args.html or not args.clickhouse else []
    if args.clickhouse:
        rows = stats.clickhouse_stats(clickhouse_settings(os.environ), since)
        source = "clickhouse"
    else:
        rows = stats.local_stats(local)
        source = str(path)
    if args.html:
        from .telemetry.chart import write_html

        write_html(Path(args.html), local, rows)
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps({"source": source, "since_ns": since, "targets": rows}, indent=2))
    else:
        for line in stats.stats_lines(rows):
            print(line)
    return 0


@command("smoke")
def smoke_cmd(args, topology) -> int:
    from pathlib import Path

    from .freshness import STATE_DIR
    from .smoke import run_smoke

    topo, _ = topology(args)
    reporter = reporter_from_env(topo.telemetry.service_name, Path(STATE_DIR))
    summary = run_smoke(topo, tuple(args.targets), browser=args.browser,
                        deadline_s=args.deadline or topo.modes.dev.smoke_deadline_s, reporter=reporter, log=_stderr)
    doc = {"mode": "dev", "run_id": summary.run_id, "outcome": summary.outcome, "duration_s": round(summary.duration_s, 3),
           "targets": {n: {"smoke": "passed" if o.smoke.ok else "failed", "reason": o.smoke.reason, **o.smoke.facts}
                       for n, o in summary.targets.items()}}
    doc, code = finish_telemetry(reporter, doc, summary.exit_code)
    if args.json:
        print(json.dumps(doc, indent=2))
    if summary.error:
        print(f"buildplane: smoke failed: {summary.error}", file=sys.stderr)
    return code


@command("tilt")
def tilt_cmd(args, topology) -> int:
    from pathlib import Path

    from .freshness import STATE_DIR
    from .tools import tilt
    from .tools.run import Runner

    record = Path(STATE_DIR) / "tilt.json"
    if args.action == "down":
        if args.args:
            raise BadInput(f"buildplane tilt down takes no arguments (got {' '.join(args.args)})")
        print(tilt.stop(record))
        return 0
    binary = Runner().which("tilt")  # exit 4 with how to install it
    sys.stdout.flush()
    tilt.exec_tilt(binary, [args.action, *args.args], record)
    return 0  # not reached: exec_tilt becomes Tilt
