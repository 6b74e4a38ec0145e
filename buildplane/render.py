"""Human forms of plans and run summaries (stderr); the JSON forms are built by their owners."""
from __future__ import annotations

from .plan import Plan
from .tools.run import quote


def plan_text(plan: Plan, topology_name: str) -> str:
    ctx = plan.kube_context.name if plan.kube_context and plan.kube_context.name else "none"
    head = f"plan: {plan.mode} on {topology_name}"
    if plan.mode != "deploy":
        head += f" — targets {', '.join(plan.targets) or '(none)'}; namespace {plan.namespace}; kube context {ctx}"
    lines = [head]
    for i, step in enumerate(plan.steps, 1):
        d = step.describe()
        after = f"  (after {', '.join(step.after)})" if step.after else ""
        lines.append(f"  {i}. {step.id}{after}")
        if "fresh_check" in d:
            lines.append(f"     skip when fresh: {d['fresh_check']}")
        if "action" in d:
            lines.append(f"     {d['action']}")
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
