"""One summary type for every run, and the JSON each command prints from it (DESIGN §4, byte-for-byte
the shapes `up --json`, `smoke --json` and `handback --json` have always had)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .plan import Plan
from .steps.base import Status, StepResult

BUILD_STATUS = {Status.SUCCEEDED: "built", Status.FRESH: "fresh", Status.FAILED: "failed", Status.NOT_RUN: "not-run"}
NO_CACHE = {"import": False, "export": False, "cached_steps": 0, "total_steps": 0}


@dataclass
class RunSummary:
    plan: Plan
    run_id: str
    outcome: str
    duration_s: float
    results: dict[str, StepResult] = field(default_factory=dict)
    exit_code: int = 0
    error: str = ""

    @property
    def mode(self) -> str:
        return self.plan.mode

    @classmethod
    def of(cls, plan: Plan, run_id: str, results: dict[str, StepResult], duration_s: float, *,
           interrupted: bool) -> "RunSummary":
        summary = cls(plan, run_id, "succeeded", duration_s, dict(results))
        failed = [results[s.id] for s in plan.steps if s.id in results and results[s.id].status == Status.FAILED]
        if interrupted:
            summary.outcome, summary.exit_code, summary.error = "failed", 130, "interrupted"
        elif failed:
            summary.outcome = "failed"
            summary.exit_code, summary.error = _first(failed) if plan.fail_fast else _every(failed)
        return summary

    def result(self, step_id: str) -> StepResult | None:
        return self.results.get(step_id)

    def to_json(self) -> dict:
        return VIEWS[self.plan.kind](self)


def _first(failed: list[StepResult]) -> tuple[int, str]:
    r = failed[0]
    return r.exit_code, r.error or f"{r.target}: {r.kind} failed — {r.reason}"


def _every(failed: list[StepResult]) -> tuple[int, str]:
    """Each failure once; one message shared by several (e.g. a bad token) is said once."""
    codes = {r.exit_code for r in failed}
    code = 3 if 3 in codes else 4 if 4 in codes else 1  # a guard's refusal, then a missing piece, over a failure
    messages = {r.reason for r in failed}
    if len(failed) > 1 and len(messages) == 1:
        return code, f"{', '.join(str(r.target) for r in failed)}: {messages.pop()}"
    return code, "; ".join(f"{r.target}: {r.reason}" for r in failed)


def _head(s: RunSummary) -> dict:
    return {"mode": s.mode, "run_id": s.run_id, "outcome": s.outcome, "duration_s": round(s.duration_s, 3)}


def _release_word(r: StepResult | None) -> str:
    if r is None:
        return "not-run"
    applied = r.facts is not None and r.facts.applied
    return {Status.SUCCEEDED: "applied" if applied else "rendered", Status.FRESH: "fresh",
            Status.FAILED: "failed", Status.NOT_RUN: "not-run"}[r.status]


def _build_word(r: StepResult | None, facts: dict) -> str:
    if r is None:
        return "not-run"
    return "synced" if r.status == Status.SUCCEEDED and facts.get("synced") else BUILD_STATUS[r.status]


def up_view(s: RunSummary) -> dict:
    out = {**_head(s), "targets": {}}
    for name in s.plan.targets:
        b, rel, smoke = s.result(f"build:{name}"), s.result(f"release:{name}"), s.result(f"smoke:{name}")
        export = s.result(f"cache-export:{name}")
        facts = b.facts_json() if b else {}
        out["targets"][name] = {
            "image": facts.get("image"), "digest": facts.get("digest"),
            "build": _build_word(b, facts), "reason": b.reason if b else "",
            "cache": facts.get("cache") or dict(NO_CACHE), "release": _release_word(rel),
            "revision": rel.facts.revision if rel is not None and rel.facts is not None else None,
            "smoke": ("passed" if smoke.ok else "failed") if smoke and smoke.status != Status.NOT_RUN else "skipped",
        }
        if facts.get("push"):  # how the image left the builder: layout | buildx | docker-push
            out["targets"][name]["push"] = facts["push"]
        if export is not None and export.status != Status.NOT_RUN:
            out["targets"][name]["cache_export"] = {**export.facts_json(), "reason": export.reason}
    if s.error:
        out["error"] = s.error
    return out


def smoke_view(s: RunSummary) -> dict:
    targets = {}
    for name in s.plan.targets:
        r = s.result(f"smoke:{name}")
        targets[name] = {"smoke": "passed" if r and r.ok else "failed", "reason": r.reason if r else "",
                         **(r.facts_json() if r else {})}
    return {**_head(s), "targets": targets}


def handback_view(s: RunSummary) -> dict:
    stop = s.result("stop-tilt")
    apps = {r.target: r.facts_json() for step in s.plan.steps if step.kind == "handback"
            for r in [s.result(step.id)] if r is not None and r.facts is not None}
    return {**_head(s), "tilt": stop.reason if stop else "", "apps": apps}


def restart_view(s: RunSummary) -> dict:
    targets = {}
    for name in s.plan.targets:
        r = s.result(f"restart:{name}")
        targets[name] = {"restart": _release_word(r), "reason": r.reason if r else "",
                         "revision": r.facts.revision if r is not None and r.facts is not None else None}
    out = {**_head(s), "targets": targets}
    if s.error:
        out["error"] = s.error
    return out


VIEWS = {"up": up_view, "smoke": smoke_view, "handback": handback_view, "restart": restart_view}
