"""`buildplane events tail|stats`: recent Build Plane Events; cache hit ratios and step durations."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..errors import BadInput
from ..state import StateDir
from ..telemetry import stats
from ..telemetry.chart import write_html
from ..telemetry.setup import clickhouse_settings
from ._output import table, print_json


def run(args, topology) -> int:
    if args.n < 0:
        raise BadInput(f"-n {args.n}: give a count of events ≥ 0")
    since = stats.parse_since(args.since, time.time_ns())
    path = StateDir.from_env().events
    if args.action == "tail":
        if args.clickhouse or args.html:
            raise BadInput("events tail reads the local file; --clickhouse and --html belong to events stats")
        tail(stats.read_events(path, since)[-args.n:] if args.n > 0 else [], as_json=args.json)
        return 0
    if args.html:
        out = Path(args.html)
        if out.is_dir():
            raise BadInput(f"--html {args.html}: is a directory; give a file path, e.g. output/build-events.html")
    local = stats.read_events(path, since) if args.html or not args.clickhouse else []
    if args.clickhouse:
        rows, source = stats.clickhouse_stats(clickhouse_settings(os.environ), since), "clickhouse"
    else:
        rows, source = stats.local_stats(local), str(path)
    if args.html:
        try:
            write_html(Path(args.html), local, rows)
        except OSError as exc:
            raise BadInput(f"--html {args.html}: cannot write it ({exc.strerror})") from None
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print_json({"source": source, "since_ns": since, "targets": rows})
    else:
        for line in stats_lines(rows):
            print(line)
    return 0


def tail(events: list[dict], *, as_json: bool) -> None:
    for e in events:
        if as_json:
            print(json.dumps(e))
            continue
        a = e["attributes"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time_unix_nano"] / 1e9))
        what = a.get("cicd.pipeline.task.name") or a.get("cicd.pipeline.name", "")
        result = a.get("cicd.pipeline.task.run.result") or a.get("cicd.pipeline.result") or ""
        ms = f" {a['buildplane.duration_ms']} ms" if "buildplane.duration_ms" in a else ""
        reason = f" — {a['buildplane.reason']}" if a.get("buildplane.reason") else ""
        print(f"{when} {a.get('cicd.pipeline.run.id', '')[:8]} {e['name']:<13} {what} {result}{ms}{reason}".rstrip())


def stats_lines(rows: list[dict]) -> list[str]:
    out = [("TARGET", "SCOPE", "RUNS", "BUILT", "FRESH", "FAILED", "CACHE-HIT", "STEP p50/p95")]
    for r in rows:
        hit = "-" if r["cache_hit_ratio"] is None else f"{r['cache_hit_ratio']:.0%}"
        steps = ", ".join(f"{s} {v['p50_ms']}/{v['p95_ms']} ms" for s, v in sorted(r["steps"].items()))
        out.append((r["target"], r["cache_scope"], str(r["runs"]), str(r["builds"]), str(r["fresh"]), str(r["failed"]),
                    hit, steps))
    return table(out)
