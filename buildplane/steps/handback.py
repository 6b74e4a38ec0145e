"""Hand the canonical apps back to Argo CD and prove it: every app Synced and Healthy, no dev image left.

Per app: read it first (with refresh) — an app already Synced and Healthy with no operation running
needs nothing; an operation in progress is waited for, not fought; an auto-sync app is refreshed,
never synced to another revision; otherwise one sync is POSTed. The wait uses the Argo CD CLI's rule:
the operation finished, `reconciledAt` not older than its `finishedAt`, sync Synced, health Healthy.
Degraded fails fast; the topology's timeout gives up.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar

from ..errors import BuildplaneError
from ..tools.argocd import IN_PROGRESS, ArgoClient, ArgoError
from .base import RunContext, Status, StepFields, StepResult

RUNNING = ("Running", "Terminating")
FAILED_PHASES = ("Failed", "Error")


@dataclass
class Clock:
    """Time seams, so tests of the wait loop need no real waiting."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    poll_s: float = 2.0


@dataclass
class AppView:
    """The fields of an Application the wait rule reads."""

    sync: str
    health: str
    health_message: str
    revision: str
    phase: str | None
    op_message: str
    started_at: str | None
    finished_at: str | None
    reconciled_at: str | None
    automated: bool
    images: tuple[str, ...]
    unhealthy: tuple[str, ...] = field(default=())

    @classmethod
    def of(cls, app: dict) -> "AppView":
        status = app.get("status") or {}
        op = status.get("operationState") or {}
        health = status.get("health") or {}
        automated = ((app.get("spec") or {}).get("syncPolicy") or {}).get("automated")
        # `automated: {}` means on; `enabled: false` (newer Argo CD) means off.
        auto_on = automated is not None and automated.get("enabled", True) is not False
        bad = tuple(
            f"{r.get('kind')}/{r.get('name')}: {(r.get('health') or {}).get('status')}"
            + (f" ({(r.get('health') or {}).get('message')})" if (r.get("health") or {}).get("message") else "")
            for r in status.get("resources") or []
            if (r.get("health") or {}).get("status") in ("Degraded", "Missing"))
        return cls(
            sync=(status.get("sync") or {}).get("status") or "Unknown",
            health=health.get("status") or "Unknown", health_message=health.get("message") or "",
            revision=(status.get("sync") or {}).get("revision") or "",
            phase=op.get("phase"), op_message=op.get("message") or "",
            started_at=op.get("startedAt"), finished_at=op.get("finishedAt"), reconciled_at=status.get("reconciledAt"),
            automated=auto_on, images=tuple((status.get("summary") or {}).get("images") or ()), unhealthy=bad,
        )

    @property
    def running(self) -> bool:
        return self.phase in RUNNING

    def settled(self) -> bool:
        """The Argo CD CLI's rule: operation finished and reconciled after it; Synced; Healthy."""
        if self.running:
            return False
        if self.finished_at and (not self.reconciled_at or self.reconciled_at < self.finished_at):
            return False  # RFC 3339 UTC strings of the same form compare in time order
        return self.sync == "Synced" and self.health == "Healthy"


@dataclass
class AppReport:
    app: str
    ok: bool
    action: str  # none | sync | waited-for-operation | refresh (auto-sync)
    sync: str = "Unknown"
    health: str = "Unknown"
    revision: str = ""
    duration_s: float = 0.0
    message: str = ""
    exit_code: int = 0  # 1: the app did not converge; 4: Argo CD or its credentials are missing

    def to_json(self) -> dict:
        return {"app": self.app, "ok": self.ok, "action": self.action, "sync": self.sync, "health": self.health,
                "revision": self.revision, "duration_s": round(self.duration_s, 2), "message": self.message}

    def result(self) -> StepResult:
        return StepResult("handback", self.app, Status.SUCCEEDED if self.ok else Status.FAILED,
                          self.message or f"{self.sync}/{self.health}", self.duration_s, self,
                          exit_code=self.exit_code or 1)


@dataclass(frozen=True)
class HandbackStep(StepFields):
    """One canonical app handed back to Argo CD: read, sync if needed, wait until Synced and Healthy."""

    kind: ClassVar[str] = "handback"
    app: str
    server: str
    timeout_s: float
    prune: bool
    poll_s: float
    dev_tag: re.Pattern


    @property
    def target(self) -> str:
        return self.app

    def describe(self) -> dict:
        base = self.server.rstrip("/")
        return {"http": [f"GET {base}/api/v1/applications/{self.app}?refresh=normal",
                         f"POST {base}/api/v1/applications/{self.app}/sync (only when not Synced+Healthy)"]}

    def run(self, ctx: RunContext) -> StepResult:
        clock = Clock(now=ctx.now, sleep=ctx.sleep, poll_s=self.poll_s)
        report = hand_back(ctx.argo, self.app, timeout_s=self.timeout_s, prune=self.prune, dev_tag=self.dev_tag,
                           clock=clock, log=ctx.log)
        return report.result()


def dev_images(images: tuple[str, ...], dev_tag: re.Pattern) -> list[str]:
    """Images whose tag only a workstation pushes (dev tags, content tags)."""
    out = []
    for image in images:
        name = image.split("@", 1)[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
        if tag and dev_tag.match(tag):
            out.append(image)
    return out


def hand_back(client: ArgoClient, app: str, *, timeout_s: float, prune: bool, dev_tag: re.Pattern,
              clock: Clock, log: Callable[[str], None]) -> AppReport:
    started = clock.now()
    report = AppReport(app, False, "none")

    def done(ok: bool, view: AppView | None, message: str = "", code: int = 1) -> AppReport:
        report.exit_code = 0 if ok else code
        if view is not None:
            report.sync, report.health, report.revision = view.sync, view.health, view.revision
        report.ok, report.message, report.duration_s = ok, message, clock.now() - started
        return report

    try:
        view = AppView.of(client.get_app(app, refresh="normal"))
        if view.settled():
            return _check_images(done, view, dev_tag)
        if view.running:
            report.action = "waited-for-operation"
            log(f"{app}: another operation is in progress ({view.phase}); waiting for it instead of syncing")
        elif view.automated:
            report.action = "refresh"  # auto-sync converges to its own target revision; a manual sync would be refused
            log(f"{app}: auto-sync is on; refreshed, waiting for Argo CD to converge")
        else:
            report.action = "sync"
            try:
                client.sync(app, prune=prune)
                log(f"{app}: sync requested (prune={str(prune).lower()})")
            except ArgoError as exc:
                if IN_PROGRESS not in exc.argo_message:
                    return done(False, view, f"sync refused: {exc.argo_message}")
                report.action = "waited-for-operation"
                log(f"{app}: {IN_PROGRESS}; waiting for it")
        return _wait(client, app, timeout_s, started, clock, done, dev_tag, report.action, view.started_at)
    except BuildplaneError as exc:
        return done(False, None, exc.message, exc.exit_code)


def _wait(client: ArgoClient, app: str, timeout_s: float, started: float, clock: Clock, done, dev_tag,
          action: str, before: str | None) -> AppReport:
    while True:
        view = AppView.of(client.get_app(app))
        # After our sync, judge only our operation: the previous one's state may still be showing.
        ours = action != "sync" or (view.phase is not None and view.started_at != before)
        if ours and view.phase in FAILED_PHASES:
            return done(False, view, f"operation {view.phase}: {view.op_message or 'no message'}")
        if ours and view.settled():
            return _check_images(done, view, dev_tag)
        if ours and view.health == "Degraded" and not view.running:
            why = view.health_message or "; ".join(view.unhealthy) or "no message"
            return done(False, view, f"Degraded: {why}")
        if clock.now() - started >= timeout_s:
            detail = view.op_message or view.health_message
            return done(False, view, f"timed out after {timeout_s:g}s: {view.sync}/{view.health}"
                        + (f", operation {view.phase}" if view.phase else "") + (f": {detail}" if detail else ""))
        clock.sleep(clock.poll_s)


def _check_images(done, view: AppView, dev_tag: re.Pattern) -> AppReport:
    left = dev_images(view.images, dev_tag)
    if left:
        return done(False, view, "Synced and Healthy but still runs a dev-tagged image: " + ", ".join(left)
                    + " (the app's manifests in Git point at a dev tag)")
    return done(True, view)
