"""Runs a Plan: each target's chain (build → release → smoke) in parallel with the others,
one lock per target so two runs never interleave, the first failure cancels the rest,
SIGINT/SIGTERM stop every child process and end the run with 130.
"""
from __future__ import annotations

import fcntl
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import BuildplaneError, Interrupted, Missing, StepFailed
from .freshness import StatCache
from .plan import Plan, Step
from .specs import BuildSpec, ReleaseSpec, SmokeSpec
from .steps.build import BuildEnv, run_build
from .steps.release import ReleaseEnv, run_release
from .steps.result import Status, StepResult
from .telemetry.reporter import NullReporter, Reporter
from .tools import run as run_mod

BUILD_STATUS = {Status.SUCCEEDED: "built", Status.FRESH: "fresh", Status.FAILED: "failed", Status.NOT_RUN: "not-run"}


@dataclass
class TargetOutcome:
    build: StepResult | None = None
    release: StepResult | None = None
    smoke: StepResult | None = None
    error: BuildplaneError | None = None


@dataclass
class RunSummary:
    mode: str
    run_id: str
    outcome: str
    duration_s: float
    targets: dict[str, TargetOutcome] = field(default_factory=dict)
    exit_code: int = 0
    error: str = ""

    def to_json(self) -> dict:
        out = {"mode": self.mode, "run_id": self.run_id, "outcome": self.outcome,
               "duration_s": round(self.duration_s, 3), "targets": {}}
        for name, t in self.targets.items():
            b = t.build
            release = "not-run"
            if t.release is not None:
                release = {Status.SUCCEEDED: "applied" if t.release.facts.get("applied") else "rendered",
                           Status.FRESH: "fresh", Status.FAILED: "failed", Status.NOT_RUN: "not-run"}[t.release.status]
            out["targets"][name] = {
                "image": (b.facts.get("image") if b else None),
                "digest": (b.facts.get("digest") if b else None),
                "build": BUILD_STATUS[b.status] if b else "not-run",
                "reason": b.reason if b else "",
                "cache": (b.facts.get("cache") if b else None) or {"import": False, "export": False,
                                                                    "cached_steps": 0, "total_steps": 0},
                "release": release,
                "revision": t.release.facts.get("revision") if t.release else None,
                "smoke": ("passed" if t.smoke.ok else "failed") if t.smoke and t.smoke.status != Status.NOT_RUN else "skipped",
            }
        if self.error:
            out["error"] = self.error
        return out


@contextmanager
def target_lock(state_dir: Path, target: str, log: Callable[[str], None]):
    """Exclusive per-target lock; a second run waits (polling, so it stays interruptible)."""
    path = state_dir / "locks" / f"{target}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        waited = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log(f"{target}: another buildplane run holds {path}; waiting for it to finish")
                    waited = True
                if run_mod.cancelled():
                    raise Interrupted("interrupted while waiting for the target lock")
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Engine:
    def __init__(self, plan: Plan, *, build_env: BuildEnv, release_env: ReleaseEnv, state_dir: Path,
                 log: Callable[[str], None], reporter: Reporter | None = None, smoke_runner=None) -> None:
        self.plan = plan
        self.build_env = build_env
        self.release_env = release_env
        self.state_dir = state_dir
        self.log = log
        self.reporter = reporter or NullReporter()
        self.smoke_runner = smoke_runner
        self.run_id = uuid.uuid4().hex[:16]
        self._failed = threading.Event()
        self._interrupted = threading.Event()
        self.cache = StatCache.open(state_dir / "statcache-release.json")

    # -- signals ------------------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        self._interrupted.set()
        self.log(f"received {signal.Signals(signum).name}: stopping child processes")
        threading.Thread(target=run_mod.stop_all, daemon=True).start()

    def run(self) -> RunSummary:
        started = time.monotonic()
        run_mod.reset_cancel()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        summary = RunSummary(self.plan.mode, self.run_id, "succeeded", 0.0)
        self.reporter.run_started(self.plan, self.run_id)
        try:
            chains: dict[str, list[Step]] = {}
            for step in self.plan.steps:
                chains.setdefault(step.target or "", []).append(step)
            with ThreadPoolExecutor(max_workers=max(1, len(chains)), thread_name_prefix="bp") as pool:
                futures = {t: pool.submit(self._chain, t, steps) for t, steps in chains.items()}
                while any(not f.done() for f in futures.values()):
                    time.sleep(0.02)  # keep the main thread free to take signals
                for t, f in futures.items():
                    summary.targets[t] = f.result()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.cache.save()
            run_mod.reset_cancel()  # the cancel flag is process-wide: leave none behind
        errors = [o.error for o in summary.targets.values() if o.error is not None]
        if self._interrupted.is_set():
            summary.outcome, summary.exit_code, summary.error = "failed", 130, "interrupted"
        elif errors:
            first = next((e for e in errors if not isinstance(e, Interrupted)), errors[0])
            summary.outcome, summary.exit_code, summary.error = "failed", first.exit_code, first.message
        summary.duration_s = time.monotonic() - started
        self.reporter.run_finished(summary)
        return summary

    # -- one target ---------------------------------------------------------------------------
    def _chain(self, target: str, steps: list[Step]) -> TargetOutcome:
        outcome = TargetOutcome()
        try:
            with target_lock(self.state_dir, target, self.log):
                for step in steps:
                    if self._failed.is_set() or self._interrupted.is_set():
                        break
                    result = self._step(step, outcome)
                    setattr(outcome, step.kind, result)
                    if result.status == Status.FAILED:  # a step that failed without raising (a smoke)
                        raise StepFailed(f"{target}: {step.kind} failed — {result.reason}")
                    if not result.ok:
                        break
        except BuildplaneError as exc:
            outcome.error = exc
            if not isinstance(exc, Interrupted):
                self._fail(target, exc)
        return outcome

    def _fail(self, target: str, exc: BuildplaneError) -> None:
        if not self._failed.is_set():
            self._failed.set()
            self.log(f"{target}: failed — {exc.message}")
            run_mod.stop_all()  # cancel the other targets' running commands

    def _step(self, step: Step, outcome: TargetOutcome) -> StepResult:
        self.reporter.step_started(self.plan, self.run_id, step)
        try:
            result = self._execute(step, outcome)
        except BuildplaneError as exc:
            status = Status.NOT_RUN if isinstance(exc, Interrupted) else Status.FAILED
            result = StepResult(step.kind, step.target, status, exc.message)
            self.reporter.step_finished(self.plan, self.run_id, step, result)
            setattr(outcome, step.kind, result)
            raise
        self.reporter.step_finished(self.plan, self.run_id, step, result)
        self.log(f"{step.target}: {step.kind} {result.status.value} — {result.reason} ({result.duration_s:.2f}s)")
        return result

    def _execute(self, step: Step, outcome: TargetOutcome) -> StepResult:
        spec = step.spec
        if isinstance(spec, BuildSpec):
            return run_build(spec, self.build_env)
        if isinstance(spec, ReleaseSpec):
            digest = outcome.build.facts.get("digest") if outcome.build else None
            if not digest:
                raise Missing(f"{step.target}: no pushed image digest to release")
            build = next((s.spec for s in self.plan.steps if s.id == f"build:{step.target}"), None)
            return run_release(spec, digest, self.release_env, self.cache, image=getattr(build, "inputs", None))
        if isinstance(spec, SmokeSpec):
            if self.smoke_runner is None:
                return StepResult("smoke", step.target, Status.NOT_RUN, "smoke not configured")
            return self.smoke_runner(spec)
        raise BuildplaneError(f"unknown step {step.id}")
