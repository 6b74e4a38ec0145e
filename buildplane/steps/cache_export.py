"""The registry cache export of one target, when it is not part of the build itself.

`background` (dev): once the target's image is pushed and released, start the export as a detached
process (`tools/cache_export.py`) and return at once; the dev loop never waits for it.
`inline` (CI, staging, `--wait-cache`): the build exports the cache itself; this step only waits for
an export an earlier dev run left running, so that when `up` returns, the cache is in the registry.
Its own Build Plane Event is the export's `cache.export`, sent when the export ends.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

from ..tools import cache_export
from .base import RunContext, Status, StepFields, StepResult
from .build import BuildStep


@dataclass
class ExportFacts:
    ref: str
    when: str  # background | inline
    pid: int | None = None
    status: str | None = None  # an awaited export's end: succeeded | failed | superseded

    def to_json(self) -> dict:
        out = {"ref": self.ref, "when": self.when}
        if self.pid is not None:
            out["pid"] = self.pid
        if self.status is not None:
            out["status"] = self.status
        return out


@dataclass(frozen=True)
class CacheExportStep(StepFields):
    kind: ClassVar[str] = "cache-export"
    target: str
    build: BuildStep
    service_name: str = "buildplane"
    revision: str = ""
    reported: bool = field(default=False, kw_only=True)  # its own process sends `cache.export` at its end

    @property
    def when(self) -> str:
        return "background" if self.build.exports_in_background else "inline"

    def describe(self) -> dict:
        if self.when == "background":
            return {"when": "background, after the release; `status` shows it", "ref": self.build.cache_to,
                    "argv": self.build.export_argv()}
        return {"when": "inline, in the build; waits for an export an earlier run left running",
                "ref": self.build.cache_to}

    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        facts = ExportFacts(self.build.cache_to or "", self.when)
        built = ctx.result(self.build.id)
        if self.when == "background" and built is not None and built.status == Status.SUCCEEDED:
            if built.facts_json().get("synced"):
                return StepResult(self.kind, self.target, Status.FRESH, "synced, not built: nothing to export",
                                  time.monotonic() - started, facts)
            if built.facts_json().get("inline_cache"):
                return StepResult(self.kind, self.target, Status.FRESH, "the cache travels inline, in the image",
                                  time.monotonic() - started, facts)
            facts.pid = cache_export.spawn(ctx.state, self._spec(ctx), self.build.build_env(ctx.state.root))
            return StepResult(self.kind, self.target, Status.SUCCEEDED,
                              f"exporting to {self.build.cache_to} in the background (pid {facts.pid}); "
                              "`buildplane status` shows how it ends", time.monotonic() - started, facts)
        if self.when == "inline":
            awaited = self._await_earlier(ctx, facts)
            if awaited is not None:
                return StepResult(self.kind, self.target, Status.FAILED if facts.status == cache_export.FAILED
                                  else Status.SUCCEEDED, awaited, time.monotonic() - started, facts)
            if built is not None and built.status == Status.SUCCEEDED:
                return StepResult(self.kind, self.target, Status.FRESH, "exported inline by the build",
                                  time.monotonic() - started, facts)
        return StepResult(self.kind, self.target, Status.FRESH, "nothing built this run: nothing to export",
                          time.monotonic() - started, facts)

    def _await_earlier(self, ctx: RunContext, facts: ExportFacts) -> str | None:
        """Wait for an export an earlier dev run left running; a sentence on how it ended, or None."""
        record = cache_export.current(ctx.state, self.build.mode, self.target)
        if not record or record.get("status") != cache_export.RUNNING:
            return None
        record = cache_export.wait(ctx.state, self.build.mode, self.target, ctx.log, ctx.sleep) or {}
        facts.pid, facts.status = record.get("pid"), str(record.get("status"))
        tail = f": {record['error']}" if record.get("error") else ""
        return f"waited for the cache export of run {record.get('run_id', '?')}: {facts.status}{tail}"

    def _spec(self, ctx: RunContext) -> dict:
        return {"mode": self.build.mode, "target": self.target, "argv": self.build.export_argv(),
                "ref": self.build.cache_to, "scope": self.build.cache_scope, "run_id": ctx.run_id,
                "service_name": self.service_name, "revision": self.revision}
