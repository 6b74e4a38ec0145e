"""The numbers people look at: per target and cache scope, builds vs fresh, cache hit ratio, p50/p95 per step.

Computed from the local events file, or by ClickHouse from the direct table with the SQL in
ops/telemetry/queries/ — both give the same rows (tests compare them).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import httpx

from ..errors import BadInput, Missing
from .sinks import clickhouse_headers, clickhouse_url

QUERIES = Path(__file__).resolve().parents[2] / "ops" / "telemetry" / "queries"
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str | None, now_ns: int) -> int:
    """`--since 2h` / `7d` → a unix time in ns (0 = everything)."""
    if not text:
        return 0
    m = _DURATION.match(text.strip())
    if not m:
        raise BadInput(f"--since {text!r}: not a duration; valid: e.g. 30m, 2h, 7d, 1w")
    return now_ns - int(m.group(1)) * _UNIT_S[m.group(2)] * 1_000_000_000


def read_events(path: Path, since_ns: int = 0) -> list[dict]:
    """Events of the local file, oldest first; a torn or foreign line is skipped, never fatal."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if (isinstance(e, dict) and isinstance(e.get("attributes"), dict) and isinstance(e.get("name"), str)
                and type(e.get("time_unix_nano")) is int and e["time_unix_nano"] >= since_ns):
            out.append(e)
    return out


def quantile_low(values: list[int], level: float) -> int:
    """ClickHouse's quantileExactLow: the element at ceil(level·n)−1 of the sorted values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(level * len(ordered)) - 1)]


def local_rows(evts: list[dict]) -> tuple[list[dict], list[dict]]:
    """(build rows, duration rows) with the columns of stats_builds.sql and stats_durations.sql."""
    builds: dict[tuple, dict] = {}
    durations: dict[tuple, list[int]] = {}
    for e in evts:
        if e.get("name") != "step.finished":
            continue
        a = e["attributes"]
        target, step, result = a.get("buildplane.target", ""), a.get("buildplane.step", ""), a.get("cicd.pipeline.task.run.result", "")
        if target and result in ("success", "skip", "failure", "timeout"):
            durations.setdefault((target, step), []).append(int(a.get("buildplane.duration_ms", 0)))
        if step != "build":
            continue
        key = (target, a.get("buildplane.cache.scope", ""))
        row = builds.setdefault(key, {"target": key[0], "cache_scope": key[1], "runs": set(), "builds": 0, "fresh": 0,
                                      "failed": 0, "cached_steps": 0, "total_steps": 0})
        row["runs"].add(a.get("cicd.pipeline.run.id"))
        if result == "success":
            row["builds"] += 1
            row["cached_steps"] += int(a.get("buildplane.cache.cached_steps", 0))
            row["total_steps"] += int(a.get("buildplane.cache.total_steps", 0))
        elif result == "skip":
            row["fresh"] += 1
        elif result in ("failure", "timeout"):
            row["failed"] += 1
    build_rows = [{**r, "runs": len(r["runs"])} for _, r in sorted(builds.items())]
    duration_rows = [{"target": t, "step": s, "count": len(v), "p50_ms": quantile_low(v, 0.5),
                      "p95_ms": quantile_low(v, 0.95)} for (t, s), v in sorted(durations.items())]
    return build_rows, duration_rows


def combine(build_rows: list[dict], duration_rows: list[dict]) -> list[dict]:
    """One entry per target and cache scope, with the hit ratio and the per-step percentiles of its target."""
    steps: dict[str, dict] = {}
    for r in duration_rows:
        steps.setdefault(r["target"], {})[r["step"]] = {"count": int(r["count"]), "p50_ms": int(r["p50_ms"]),
                                                        "p95_ms": int(r["p95_ms"])}
    out = []
    for r in build_rows:
        total = int(r["total_steps"])
        out.append({"target": r["target"], "cache_scope": r["cache_scope"], "runs": int(r["runs"]),
                    "builds": int(r["builds"]), "fresh": int(r["fresh"]), "failed": int(r["failed"]),
                    "cache_hit_ratio": round(int(r["cached_steps"]) / total, 3) if total else None,
                    "steps": steps.get(r["target"], {})})
    return out


def local_stats(evts: list[dict]) -> list[dict]:
    """The stats rows of events read from the local file."""
    return combine(*local_rows(evts))


def clickhouse_query(settings: dict, name: str, since_ns: int, client: httpx.Client | None = None) -> list[dict]:
    sql = (QUERIES / f"{name}.sql").read_text().format(database=settings["database"], table=settings["table"],
                                                       since_ns=int(since_ns))
    url = clickhouse_url(settings["host_port"])
    headers = clickhouse_headers(settings.get("user"), settings.get("password"))
    http = client or httpx.Client(timeout=10)
    try:
        resp = http.post(url, content=sql.encode(), headers=headers)
    except httpx.HTTPError as exc:
        raise Missing(f"ClickHouse at {url} does not answer ({type(exc).__name__}); "
                      "check FRACTALOPS_CLICKHOUSE_HOST_PORT") from None
    finally:
        if client is None:
            http.close()
    if resp.status_code in (401, 403, 516):
        raise Missing(f"ClickHouse at {url} refused the credentials of $FRACTALOPS_CLICKHOUSE_USER ({resp.status_code})")
    if resp.status_code >= 300:
        raise Missing(f"ClickHouse at {url}: {resp.status_code}: {resp.text.strip()[:300]}")
    return resp.json()["data"]


def clickhouse_stats(settings: dict, since_ns: int = 0, client: httpx.Client | None = None) -> list[dict]:
    return combine(clickhouse_query(settings, "stats_builds", since_ns, client),
                   clickhouse_query(settings, "stats_durations", since_ns, client))
