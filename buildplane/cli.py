"""Command line (DESIGN §4): parse, call, print, map errors to exit codes — nothing else."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import Callable

from .errors import BadInput, BuildplaneError, internal_error
from .topology import MODES, Topology, load, topology_path


class _Parser(argparse.ArgumentParser):
    """argparse that raises BadInput (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        raise BadInput(f"{self.prog}: {message} (see {self.prog} --help)")


# Each command is one module of buildplane.commands; its `run(args, topology)` returns the exit code.
# Named, not imported, here: a command loads only its own module, so `--help`, `resources` (Tilt's
# start-up) and a no-op `up` do not pay for every other command's imports.
COMMANDS: dict[str, str] = {name: f"buildplane.commands.{name}" for name in (
    "env", "plan", "up", "resources", "smoke", "handback", "events", "status", "explain", "tilt", "doctor", "logs",
    "restart")}


def command(name: str) -> Callable:
    return importlib.import_module(COMMANDS[name]).run


def _sub(subs, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return subs.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (0 < value < 1e7):  # also refuses nan and inf, which would never end
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0 (and below 10000000)")
    return value


def _mode_flags(p: argparse.ArgumentParser, default_mode: str | None = None) -> None:
    p.add_argument("--mode", choices=MODES, default=default_mode, required=default_mode is None,
                   help="dev | staging | deploy")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="targets to run (default: the non-optional ones)")
    p.add_argument("--build-only", action="store_true", help="build and push; no release")
    p.add_argument("--apply", action="store_true",
                   help="staging: also release into the staging namespace (naming targets does the same for them)")
    p.add_argument("--remote-cache", action="store_true",
                   help="import and export the registry build cache this run (default: the topology's "
                        "modes.<mode>.cache, or $BUILDPLANE_REMOTE_CACHE=true|false)")
    p.add_argument("--wait-cache", action="store_true",
                   help="export the registry cache inside the build and return once it is in the registry "
                        "(dev default: in the background after the release; CI and staging always wait; "
                        "$BUILDPLANE_WAIT_CACHE=true)")
    p.add_argument("--force", action="store_true", help="rebuild and re-release even when fresh")
    p.add_argument("--builder", metavar="NAME",
                   help="the buildx builder or Docker context to build on (default: $BUILDPLANE_BUILDER, "
                        "else the topology's builder.name, else the environment's)")
    p.add_argument("--rebuild", action="store_true",
                   help="a real build even where the target's sync rules would take the change (dev)")
    p.add_argument("--pull", action="store_true",
                   help="ask the registry what each base image (FROM) is now, and pull it (default: an answer "
                        "is reused for 10 minutes, $BUILDPLANE_BASE_MAX_AGE_S)")
    p.add_argument("--kube-context", help="kube context for Helm (default: BUILDPLANE_KUBE_CONTEXT, else kubeconfig's current)")
    p.add_argument("--namespace", help="release namespace (must be the mode's own; anything else is refused)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="buildplane",
        description="Pipeline engine for a remote-cluster dev loop: buildx through a registry cache, "
                    "Helm releases in the dev namespace, Argo CD handback, Build Plane Events.",
        epilog="example:\n  buildplane --topology ops/infra/topology/lxc-pve-lab.yaml plan --mode dev runtime",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--topology", metavar="PATH",
                        help="topology YAML (default: $BUILDPLANE_TOPOLOGY, else ops/infra/topology/local.yaml)")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _pipeline_commands(subs)
    _insight_commands(subs)
    return parser


def _pipeline_commands(subs) -> None:
    """The commands that run or show a pipeline: env, plan, up, resources, smoke, handback, tilt."""
    p = _sub(subs, "env", "print the BuildPlane contract (registries, cache refs, namespaces) as env exports",
             "eval \"$(buildplane env ops/infra/topology/lxc-pve-lab.yaml --mode dev)\"")
    p.add_argument("path", nargs="?", metavar="PATH", help="topology file (overrides --topology)")
    p.add_argument("--mode", choices=MODES, default="dev")
    p.add_argument("--format", choices=("sh", "json"), default="sh")

    p = _sub(subs, "plan", "print every step with its exact argv; touches nothing",
             "buildplane plan --mode dev runtime portal --json")
    _mode_flags(p)

    p = _sub(subs, "up", "run the pipeline for a mode (what Tilt's local_resource calls)",
             "buildplane up --mode dev runtime --json")
    _mode_flags(p)

    p = _sub(subs, "resources", "the Tilt resources, for the Tiltfile to define",
             "buildplane resources --json")
    p.add_argument("--json", action="store_true", required=True, help="JSON output (the only form)")

    p = _sub(subs, "smoke", "route smoke of targets' public routes; --browser: the portal in a real Chromium",
             "buildplane smoke --browser portal")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="targets (default: those with smoke routes / a browser check)")
    p.add_argument("--browser", action="store_true", help="Playwright + the system's Chromium; screenshot to output/playwright/")
    p.add_argument("--deadline", type=_positive, metavar="S", help="seconds to keep retrying (default: the mode's smoke_deadline_s)")
    p.add_argument("--mode", choices=("dev", "staging"), default="dev", help="whose routes (a route's `modes`, {namespace} in its URL)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = _sub(subs, "handback", "deploy mode: stop Tilt, ask Argo CD to sync the canonical apps, wait until Synced and Healthy",
             "ARGOCD_AUTH_TOKEN=… buildplane handback --timeout 900")
    p.add_argument("--timeout", type=_positive, metavar="S", help="seconds to wait per app (default: modes.deploy.argo.timeout_s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = _sub(subs, "tilt", "run Tilt so its process can be found and stopped again (up, ci); stop it (down)",
             "buildplane tilt up -- --worker --e2e")
    p.add_argument("action", choices=("up", "down", "ci"))
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="passed to `tilt up` / `tilt ci` as they are")


def _insight_commands(subs) -> None:
    """The commands that read what happened: events, status, explain, doctor."""
    p = _sub(subs, "events", "recent Build Plane Events (tail) or cache hit rates and durations (stats)",
             "buildplane events stats --since 7d --html output/build-events.html")
    p.add_argument("action", choices=("tail", "stats"))
    p.add_argument("-n", type=int, default=20, metavar="N", help="tail: how many events (default 20)")
    p.add_argument("--since", metavar="DURATION", help="only events newer than this, e.g. 2h, 7d")
    p.add_argument("--clickhouse", action="store_true",
                   help="stats: ask ClickHouse (FRACTALOPS_CLICKHOUSE_* env) instead of the local file")
    p.add_argument("--html", metavar="FILE", help="stats: also write a page with durations and hit ratios over time")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")

    p = _sub(subs, "status", "per target: is what runs (the last release's image) what the working tree would build now?",
             "buildplane status --mode dev")
    p.add_argument("--mode", choices=("dev", "staging"), default="dev")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="targets (default: every target)")
    p.add_argument("--pods", action="store_true",
                   help="ask the cluster (read-only): release, pods, restarts, and whether they run the released image")
    p.add_argument("--kube-context", help="with --pods: the kube context (default: BUILDPLANE_KUBE_CONTEXT, else kubeconfig's current)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = _sub(subs, "logs", "read-only: the logs of every pod of the targets' releases, prefixed pod/container",
             "buildplane logs portal -f --since 10m")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="targets (default: the non-optional ones with a chart)")
    p.add_argument("-f", "--follow", action="store_true", help="follow, and pick up new pods as they roll; Ctrl-C stops")
    p.add_argument("--since", metavar="DURATION", help="only lines newer than this, e.g. 30s, 10m, 2h")
    p.add_argument("--previous", action="store_true", help="the logs of each container's previous run (after a crash)")
    p.add_argument("--tail", type=int, metavar="N", help="the last N lines of each container")
    p.add_argument("--raw", action="store_true", help="log lines as written, terminal escapes included (default: escaped)")
    p.add_argument("--mode", choices=("dev", "staging"), default="dev")
    p.add_argument("--kube-context", help="the kube context (default: BUILDPLANE_KUBE_CONTEXT, else kubeconfig's current)")

    p = _sub(subs, "restart", "a rolling restart through Helm (same image, new revision), never kubectl",
             "buildplane restart portal")
    p.add_argument("targets", nargs="+", metavar="TARGET", help="the targets to restart")
    p.add_argument("--mode", choices=("dev", "staging"), default="dev")
    p.add_argument("--apply", action="store_true", help="staging: allow the restart (staging changes nothing live without it)")
    p.add_argument("--kube-context", help="the kube context (default: BUILDPLANE_KUBE_CONTEXT, else kubeconfig's current)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = _sub(subs, "explain", "which path a change to PATH takes (rebuild + release / release only / nothing) and why",
             "buildplane explain examples/fractalops/runtime/apps/api/main.py charts/fractalops-runtime/values-dev.yaml")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files (existing or not) relative to the current directory")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    _sub(subs, "doctor", "check tools, credentials and endpoints, each with a fix hint", "buildplane doctor")


def _topology(args) -> tuple[Topology, Path]:
    path = topology_path(getattr(args, "path", None) or args.topology)
    return load(path), path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv, passthrough = _passthrough(list(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
        if passthrough is not None:
            args.args = passthrough
        if not args.command:
            parser.print_help(sys.stderr)
            return 2
        return int(command(args.command)(args, _topology) or 0)
    except BuildplaneError as exc:
        from .telemetry.events import redact
        print(f"buildplane: {redact(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("buildplane: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # never a traceback for the user: one line, and how to see more
        if os.environ.get("BUILDPLANE_DEBUG"):
            raise
        from .telemetry.events import redact
        print(f"buildplane: {redact(internal_error(exc))}", file=sys.stderr)
        return 1


def _passthrough(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`tilt ACTION ARGS…`: ARGS go to Tilt exactly as given, `--` included (argparse would drop it)."""
    for i, word in enumerate(argv):
        if word == "tilt" and (i == 0 or argv[i - 1] != "--topology") and i + 1 < len(argv):
            return argv[:i + 2], argv[i + 2:]
        if not word.startswith("-") and (i == 0 or argv[i - 1] != "--topology"):
            break  # another command: nothing passes through
    return argv, None


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """`buildplane` and `python -m buildplane`: `main`, then leave without the interpreter's teardown.

    Freeing every object at exit costs ~60 ms, a quarter of a no-op `up`; by the time `main` returns,
    every record is written (atomically, files closed), the sinks are flushed and no child is ours."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError):
        pass
    os._exit(code)
