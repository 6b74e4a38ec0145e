"""Build Plane Events (DESIGN §8): names and attributes, with OpenTelemetry's CICD and VCS conventions.

An event is built from what the engine reports (plan, step, result, summary); steps never see this.
Every string that leaves the process passes `redact` first: no token, password or `user:pass@`.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

TASK_TYPE = {"build": "build", "push": "build", "cache-export": "build", "release": "deploy", "restart": "deploy", "handback": "deploy", "stop-tilt": "deploy",
             "wait": "deploy", "smoke": "test"}
STEP_RESULT = {"succeeded": "success", "fresh": "skip", "failed": "failure", "not-run": "cancellation"}
_SECRET_ENV = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|_KEY|AUTH|CREDENTIAL)", re.I)
_KEY = r"[\w.-]*(?:token|passw(?:or)?d|secret|api[_-]?key|access[_-]?key|private[_-]?key|auth|credential)[\w.-]*"
_PATTERNS = [
    # user:pass@ in URLs; the password may itself hold '@' (greedy up to the last '@' of the authority)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@:]+:[^/\s]*@"), r"\1***@"),
    # scheme-less user:pass@host (not an image reference's repo:tag@sha256:…)
    (re.compile(r"(?<![\w/.:-])[\w.-]+:[^\s/@:]+@(?!sha256:)(?=[\w.-]+)"), "***@"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 ***"),
    # key=value, key: value, "key": "value", ?access_token=… — any key naming a secret
    (re.compile(rf"(?i)\b({_KEY})([\"']?\s*[=:]\s*[\"']?)(?!\$\{{)[^\s\"'&,;]+"), r"\1\2***"),  # ${VAR}: a name
    # headers like X-ClickHouse-Key: / X-Api-Key:
    (re.compile(r"(?i)\b(x-[\w-]*key)(\s*[=:]\s*)[^\s\"'&,;]+"), r"\1\2***"),
    # -p SECRET / --password SECRET on a command line
    (re.compile(r"(?<!\S)(-p|--password)(\s+|=)\S+"), r"\1\2***"),
]


def secret_values(environ=None) -> tuple[str, ...]:
    """Values of secret-looking env vars, longest first; a reporter reads them once, not per string."""
    environ = os.environ if environ is None else environ
    return tuple(sorted({v for k, v in environ.items() if _SECRET_ENV.search(k) and len(v) >= 4}, key=len, reverse=True))


def redact(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """`text` with credentials masked: URL userinfo, auth headers, key=value secrets, and secret env values."""
    for regex, repl in _PATTERNS:
        text = regex.sub(repl, text)
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, "***")
    return text


@dataclass(frozen=True)
class Event:
    name: str  # run.started | run.finished | step.started | step.finished | cache.export
    time_unix_nano: int
    attributes: dict
    severity: str = "INFO"

    def to_json(self) -> dict:
        return {"time_unix_nano": self.time_unix_nano, "name": self.name, "severity": self.severity,
                "attributes": self.attributes}

    @property
    def body(self) -> str:
        a = self.attributes
        task = a.get("cicd.pipeline.task.name")
        result = a.get("cicd.pipeline.task.run.result") or a.get("cicd.pipeline.result") or ""
        return " ".join(str(p) for p in (self.name, task, result, a.get("buildplane.reason", "")) if p)


def _clean(attrs: dict, secrets=None) -> dict:
    """Drop empty values (OTLP has no null) and redact every string."""
    return {k: (redact(v, secrets) if isinstance(v, str) else v) for k, v in attrs.items() if v is not None and v != ""}


def _base(plan, run_id: str) -> dict:
    return {"cicd.pipeline.name": plan.mode, "cicd.pipeline.run.id": run_id,
            "vcs.ref.head.revision": getattr(plan, "revision", None)}


def run_started(plan, run_id: str, secrets=None) -> Event:
    attrs = {**_base(plan, run_id), "buildplane.targets": ",".join(plan.targets)}
    return Event("run.started", time.time_ns(), _clean(attrs, secrets))


def _step_attrs(plan, run_id: str, step) -> dict:
    kind = step.kind
    attrs = {**_base(plan, run_id), "cicd.pipeline.task.name": f"{kind} {step.target}" if step.target else kind,
             "cicd.pipeline.task.type": TASK_TYPE.get(kind, "build"), "buildplane.step": kind,
             "buildplane.target": step.target}
    scope = getattr(step, "cache_scope", None)
    if scope:
        attrs["buildplane.cache.scope"] = scope
    return attrs


def step_started(plan, run_id: str, step, secrets=None) -> Event:
    return Event("step.started", time.time_ns(), _clean(_step_attrs(plan, run_id, step), secrets))


BUILD_WORD = {"succeeded": "built", "fresh": "fresh", "failed": "failed", "not-run": "not-run"}


def step_finished(plan, run_id: str, step, result, secrets=None) -> Event:
    attrs = _step_attrs(plan, run_id, step)
    outcome = STEP_RESULT[result.status.value]
    if outcome == "failure" and "timed out" in (result.reason or ""):
        outcome = "timeout"
    facts = result.facts_json()
    cache = facts.get("cache") or {}
    attrs.update({
        "cicd.pipeline.task.run.result": outcome,
        "buildplane.duration_ms": int(round(result.duration_s * 1000)),
        "buildplane.reason": result.reason,
        "buildplane.image.digest": facts.get("digest") or facts.get("image_digest"),
        "buildplane.image.ref": facts.get("image"),
    })
    if step.kind == "build":
        attrs.update({"buildplane.cache.cached_steps": int(cache.get("cached_steps", 0)),
                      "buildplane.cache.total_steps": int(cache.get("total_steps", 0)),
                      "buildplane.cache.import": bool(cache.get("import")),
                      "buildplane.cache.export": bool(cache.get("export")),
                      "buildplane.build": "synced" if facts.get("synced") else BUILD_WORD[result.status.value]})
        if facts.get("push"):
            attrs["buildplane.build.push"] = facts["push"]
        if facts.get("synced"):
            attrs.update({f"buildplane.sync.{k}": int(facts["synced"][k]) for k in ("files", "deleted", "bytes")})
    if step.kind in ("release", "restart"):
        attrs["buildplane.release.revision"] = facts.get("revision")
        attrs["buildplane.release.applied"] = bool(facts.get("applied"))
    if step.kind == "handback":
        attrs.update({"argocd.app.sync": facts.get("sync"), "argocd.app.health": facts.get("health"),
                      "argocd.app.revision": facts.get("revision")})
    if step.kind == "smoke":
        attrs["buildplane.smoke.routes"] = facts.get("routes_passed")
    severity = "ERROR" if outcome in ("failure", "timeout") else "INFO"
    return Event("step.finished", time.time_ns(), _clean(attrs, secrets), severity)


EXPORT_RESULT = {"succeeded": "success", "failed": "failure", "superseded": "cancellation"}


def cache_export(record: dict, secrets=None) -> Event:
    """`cache.export`: the end of a background registry cache export, sent by the export's own process
    (with the run id of the run that started it, and the step attributes of a `cache-export` step)."""
    outcome = EXPORT_RESULT.get(str(record.get("status")), "failure")
    target = record.get("target")
    attrs = {"cicd.pipeline.name": record.get("mode"), "cicd.pipeline.run.id": record.get("run_id"),
             "vcs.ref.head.revision": record.get("revision"), "cicd.pipeline.task.name": f"cache-export {target}",
             "cicd.pipeline.task.type": "build", "buildplane.step": "cache-export", "buildplane.target": target,
             "buildplane.cache.scope": record.get("scope"), "buildplane.cache.ref": record.get("ref"),
             "cicd.pipeline.task.run.result": outcome,
             "buildplane.duration_ms": int(round(float(record.get("duration_s") or 0) * 1000)),
             "buildplane.reason": record.get("error") or f"registry cache exported to {record.get('ref')}"}
    return Event("cache.export", time.time_ns(), _clean(attrs, secrets), "ERROR" if outcome == "failure" else "INFO")


def run_finished(summary, run_revision: str | None, secrets=None) -> Event:
    result = {"succeeded": "success", "failed": "failure", "refused": "failure"}.get(summary.outcome, "failure")
    if getattr(summary, "exit_code", 0) == 130:
        result = "cancellation"
    attrs = {"cicd.pipeline.name": summary.mode, "cicd.pipeline.run.id": summary.run_id,
             "cicd.pipeline.result": result, "vcs.ref.head.revision": run_revision,
             "buildplane.duration_ms": int(round(summary.duration_s * 1000)), "buildplane.reason": summary.error}
    return Event("run.finished", time.time_ns(), _clean(attrs, secrets), "ERROR" if result == "failure" else "INFO")
