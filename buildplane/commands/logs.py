"""`buildplane logs [TARGET…] [-f] [--since D] [--previous]`: every pod of the targets' releases, each line
prefixed `pod/container |`, read-only (tools/kube.py) in the mode's namespace on the allowed context.

With -f, one stream per container, and the pods are listed again every POLL_S so the new pods of a
rollout are followed as they start; Ctrl-C (or SIGTERM) stops every stream at once and says so (exit 130).
"""
from __future__ import annotations

import re
import signal
import sys
import threading

from ..errors import BadInput, BuildplaneError
from ..tools.kube import KubeReader
from ._cluster import cluster, released_targets, selector
from ._output import printable

POLL_S = 2.0
_DURATION = re.compile(r"^(\d+)([smhd])$")


def since_seconds(text: str | None) -> int | None:
    if text is None:
        return None
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise BadInput(f"--since {text!r}: not a duration; valid: e.g. 30s, 10m, 2h, 1d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class Printer:
    """Whole lines from many streams, never interleaved mid-line."""

    def __init__(self, out=None, raw: bool = False) -> None:
        self.out = out or sys.stdout
        self.lock = threading.Lock()
        self.raw = raw  # --raw: the log lines as the containers wrote them, escapes and all

    def line(self, prefix: str, text: str) -> None:
        shown = text if self.raw else printable(text)
        with self.lock:
            self.out.write(f"{printable(prefix)} | {shown}\n")
            self.out.flush()


def containers(pod: dict) -> list[str]:
    return [c.get("name") for c in (pod.get("spec") or {}).get("containers") or [] if c.get("name")]


def read_once(reader: KubeReader, pods: list[dict], printer: Printer, since: int | None, previous: bool,
              tail: int | None) -> None:
    for pod in pods:
        name = pod["metadata"]["name"]
        for container in containers(pod):
            for text in reader.log(name, container, since_seconds=since, previous=previous, tail_lines=tail):
                printer.line(f"{name}/{container}", text)


def follow(reader: KubeReader, labels: list[str], printer: Printer, since: int | None, tail: int | None,
           stop: threading.Event, log=lambda m: print(m, file=sys.stderr)) -> None:
    """Stream every container of every pod with these labels, new pods included, until `stop`."""
    streams: dict[tuple[str, str], threading.Thread] = {}

    def stream(pod: str, container: str, since_s: int | None) -> None:
        try:
            for text in reader.log(pod, container, follow=True, since_seconds=since_s, tail_lines=tail, stop=stop):
                printer.line(f"{pod}/{container}", text)
        except BuildplaneError as exc:
            if not stop.is_set():
                log(printable(f"{pod}/{container}: {exc.message}"))
    first = True
    while not stop.is_set():
        try:
            pods = [p for label in labels for p in reader.pods(label)]
        except BuildplaneError as exc:
            if first:
                raise
            log(f"listing pods again failed ({exc.message}); still following the streams already open")
            pods = []
        for pod in pods:
            name = pod["metadata"]["name"]
            if (pod.get("status") or {}).get("phase") not in ("Running", "Succeeded", "Failed"):
                continue  # not started yet: the next round picks it up
            for container in containers(pod):
                key = (name, container)
                if key not in streams:
                    if not first:
                        log(f"following {name}/{container} (new)")
                    t = threading.Thread(target=stream, args=(name, container, since if first else None),
                                         daemon=True, name=f"bp-log-{name}")
                    streams[key] = t
                    t.start()
        first = False
        stop.wait(POLL_S)


def run(args, topology) -> int:
    topo, _ = topology(args)
    since = since_seconds(args.since)
    if args.tail is not None and args.tail < 0:
        raise BadInput(f"--tail {args.tail}: valid: 0 or more lines")
    names = released_targets(topo, list(args.targets))  # bad input (exit 2) before a missing context (exit 4)
    where = cluster(topo, args.mode, args.kube_context)
    reader = KubeReader(where.context, where.namespace)
    labels = [selector(topo, n) for n in names]
    printer = Printer(raw=args.raw)
    if not args.follow:
        for label in labels:
            read_once(reader, reader.pods(label), printer, since, args.previous, args.tail)
        return 0
    if args.previous:
        raise BadInput("--previous and -f contradict each other: a previous run has ended; pick one")
    stop = threading.Event()
    # Ctrl-C (or Tilt's TERM) ends the follow: set here, not left to Python's default, which a parent that
    # ignores SIGINT (a background job) would have turned off.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    follow(reader, labels, printer, since, args.tail, stop)
    print("buildplane: stopped following logs", file=sys.stderr)
    return 130
