"""What the commands print: plans and summaries in plain text, aligned tables, the telemetry report."""
from __future__ import annotations

import json
import sys

from ..telemetry.events import redact
from ..plan import Plan, describe
from ..tools.run import quote


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0a, 0x20), 0x7f, *range(0x80, 0xa0))}


def printable(text: str) -> str:
    """What the cluster said, safe for a terminal: control characters (ESC, BEL, CR, C1 codes…) shown as
    \\xNN, so a pod name, a status message or a log line cannot retitle, clear or rewrite the screen."""
    return text.translate(_CONTROL)


def stderr(line: str) -> None:
    """Every log line passes the same masking as events: a tool's error may quote a credential."""
    print(redact(line), file=sys.stderr, flush=True)


def print_json(doc) -> None:
    """One JSON document on stdout, masked like every other output (masking keeps it valid JSON)."""
    print(redact(json.dumps(doc, indent=2)))


def plan_text(plan: Plan, topology_name: str) -> str:
    ctx = plan.kube_context.name if plan.kube_context and plan.kube_context.name else "none"
    head = f"plan: {plan.mode} on {topology_name}"
    if plan.mode != "deploy":
        head += f" — targets {', '.join(plan.targets) or '(none)'}; namespace {plan.namespace}; kube context {ctx}"
    lines = [head]
    for i, step in enumerate(plan.steps, 1):
        d = describe(step)
        after = f"  (after {', '.join(step.after)})" if step.after else ""
        lines.append(f"  {i}. {step.id}{after}")
        if "fresh_check" in d:
            lines.append(f"     skip when fresh: {d['fresh_check']}")
        if "sync" in d:
            lines.append(f"     sync instead when {d['sync']['when']} ({d['sync']['how']}):")
            lines += [f"       {rule}" for rule in d["sync"]["rules"]]
        for key in ("action", "browser"):
            if key in d:
                lines.append(f"     {d[key]}")
        if "argv" in d:
            lines.append(f"     $ {quote(d['argv'])}")
        if "tag" in d:
            lines.append(f"     then {d['tag']}")
        for call in d.get("http", []):
            lines.append(f"     {call}")
        if step.note:
            lines.append(f"     note: {step.note}")
    for note in plan.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned columns (the first row is the header); the last column is left unpadded."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip() for r in rows]


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
        image = f" — {t['image']}" if t.get("image") else ""  # a failed build pushed nothing to name
        export = t.get("cache_export") or {}
        exporting = ", cache exporting in the background" if export.get("pid") and export.get("when") == "background" else ""
        out.append(f"{name}: build {t['build']}, {release}, smoke {t['smoke']}{exporting}{image}")
    return out


def handback_lines(doc: dict) -> list[str]:
    """The per-app table people read: name, sync, health, revision, time, Argo's message on failure."""
    rows = [("APP", "SYNC", "HEALTH", "REVISION", "TOOK", "ACTION", "")]
    rows += [(app, a["sync"], a["health"], a["revision"][:12] or "-", f"{a['duration_s']:.1f}s", a["action"],
              "" if a["ok"] else a["message"]) for app, a in doc["apps"].items()]
    return table(rows)


def finish_telemetry(reporter, doc: dict, code: int) -> tuple[dict, int]:
    """Flush the sinks (bounded), put what they sent and lost in the summary; strict mode fails on a loss."""
    report = reporter.close()
    doc = {**doc, "telemetry": report.to_json()}
    if report.dropped:
        stderr(f"buildplane: telemetry: {report.dropped} event(s) dropped — " + "; ".join(report.failed_sinks()))
    if report.strict and report.failed_sinks() and code == 0:
        stderr("buildplane: FRACTALOPS_BUILD_EVENTS_STRICT=true and telemetry sink " + "; ".join(report.failed_sinks()))
        doc["outcome"], code = "failed", 1
    return doc, code
