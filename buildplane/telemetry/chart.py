"""`events stats --html FILE`: one self-contained page (inline SVG, no scripts, no network) with build
durations and cache hit ratios over time per target, and the stats table."""
from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]
W, H, PAD = 860, 260, 48


def series(evts: list[dict]) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list[tuple[int, float]]]]:
    """Per target: (time, build duration s) of every build step, and (time, cache hit ratio) of real builds."""
    durations: dict[str, list] = {}
    ratios: dict[str, list] = {}
    for e in evts:
        a = e["attributes"]
        if e.get("name") != "step.finished" or a.get("buildplane.step") != "build":
            continue
        target, t = a.get("buildplane.target", "?"), int(e["time_unix_nano"])
        durations.setdefault(target, []).append((t, int(a.get("buildplane.duration_ms", 0)) / 1000))
        total = int(a.get("buildplane.cache.total_steps", 0))
        if a.get("cicd.pipeline.task.run.result") == "success" and total:
            ratios.setdefault(target, []).append((t, int(a.get("buildplane.cache.cached_steps", 0)) / total))
    return durations, ratios


def _svg(title: str, data: dict[str, list[tuple[int, float]]], y_label: str, y_max: float | None = None) -> str:
    points = [p for pts in data.values() for p in pts]
    if not points:
        return f"<h2>{html.escape(title)}</h2><p>no data yet</p>"
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    top = y_max if y_max is not None else max(p[1] for p in points) or 1.0
    sx = lambda t: PAD + (W - 2 * PAD) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.5)  # noqa: E731
    sy = lambda v: H - PAD + (2 * PAD - H) * (v / top)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{html.escape(title)}">',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>',
             f'<text x="4" y="{PAD - 8}" font-size="11">{html.escape(y_label)} (max {top:.3g})</text>']
    for i, (target, pts) in enumerate(sorted(data.items())):
        color = COLORS[i % len(COLORS)]
        coords = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in sorted(pts))
        parts.append(f'<polyline class="series" data-target="{html.escape(target)}" fill="none" stroke="{color}" '
                     f'stroke-width="2" points="{coords}"/>')
        for t, v in sorted(pts):
            parts.append(f'<circle cx="{sx(t):.1f}" cy="{sy(v):.1f}" r="3" fill="{color}"><title>{html.escape(target)}: '
                         f'{v:.3g} at {_when(t)}</title></circle>')
        parts.append(f'<text x="{W - PAD + 4}" y="{PAD + 14 * i}" font-size="11" fill="{color}">{html.escape(target)}</text>')
    parts.append(f'<text x="{PAD}" y="{H - 8}" font-size="11">{_when(t0)}</text>'
                 f'<text x="{W - PAD}" y="{H - 8}" font-size="11" text-anchor="end">{_when(t1)}</text></svg>')
    return f"<h2>{html.escape(title)}</h2>" + "".join(parts)


def _when(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_html(path: Path, evts: list[dict], rows: list[dict], title: str = "Build Plane Events") -> None:
    durations, ratios = series(evts)
    head = "<tr><th>target</th><th>cache scope</th><th>runs</th><th>built</th><th>fresh</th><th>failed</th><th>cache hit</th><th>p50/p95 per step</th></tr>"
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
            r["target"], r["cache_scope"], r["runs"], r["builds"], r["fresh"], r["failed"],
            "-" if r["cache_hit_ratio"] is None else f"{r['cache_hit_ratio']:.0%}",
            ", ".join(f"{s} {v['p50_ms']}/{v['p95_ms']} ms" for s, v in sorted(r["steps"].items())))) + "</tr>"
        for r in rows)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{len(evts)} events</p><table>{head}{body}</table>"
            + _svg("Build duration per target", durations, "seconds")
            + _svg("Cache hit ratio per target (builds that ran)", ratios, "cached/total steps", 1.0)
            + "</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
