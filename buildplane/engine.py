"""The one run loop: every mode's plan — `up`, `smoke`, `handback` — is run here.

A step starts once every step it comes `after` has succeeded (or was fresh); steps with nothing
between them run in parallel. A step whose predecessor failed does not run. One lock per target
keeps two runs from interleaving on it. In a fail-fast plan (`up`) the first failure cancels the
rest; otherwise (smoke, handback) every step runs and each failure is reported. SIGINT/SIGTERM
stop every child process and end the run with 130. The reporter hears every start and end.
"""
from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
import traceback
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from typing import Callable

from .errors import BuildplaneError, Interrupted, internal_error
from .plan import Plan
from .state import StateDir
from .steps.base import RunContext, Status, Step, StepResult
from .summary import RunSummary
from .telemetry.reporter import NullReporter, Reporter
from .tools import children, run as run_mod

POLL_S = 0.02  # the main thread wakes this often, so it stays free to take signals


@contextmanager
def target_lock(state: StateDir, target: str, log: Callable[[str], None]):
    """Exclusive per-target lock; a second run waits (polling, so it stays interruptible)."""
    path = state.lock(target)
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
    def __init__(self, plan: Plan, ctx: RunContext, *, reporter: Reporter | None = None) -> None:
        self.plan = plan
        self.ctx = ctx
        self.reporter = reporter or NullReporter()
        self.run_id = uuid.uuid4().hex[:16]
        self._stop = threading.Event()  # set by the first failure of a fail-fast plan
        self._interrupted = threading.Event()

    def _on_signal(self, signum, _frame) -> None:
        self._interrupted.set()
        self.ctx.log(f"received {signal.Signals(signum).name}: stopping child processes")
        threading.Thread(target=run_mod.stop_all, kwargs={"interrupt": True, "log": self.ctx.log}, daemon=True).start()

    def run(self) -> RunSummary:
        started = time.monotonic()
        run_mod.reset_cancel()
        self.ctx.run_id = self.run_id
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        self.reporter.run_started(self.plan, self.run_id)
        try:
            ledger = getattr(self.ctx.runner, "ledger", None)
            if ledger is not None:
                children.reap_orphans(ledger, self.ctx.log)
            with ExitStack() as locks:
                for name in sorted({s.lock for s in self.plan.steps if s.lock}):
                    locks.enter_context(target_lock(self.ctx.state, name, self.ctx.log))
                self._schedule()
        except Interrupted:
            self._interrupted.set()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.ctx.release_cache is not None:
                self.ctx.release_cache.save()
            run_mod.reset_cancel()  # the cancel flag is process-wide: leave none behind
        summary = RunSummary.of(self.plan, self.run_id, self.ctx.results, time.monotonic() - started,
                                interrupted=self._interrupted.is_set())
        self.reporter.run_finished(summary)
        return summary

    # -- scheduling ------------------------------------------------------------------------------
    def _schedule(self) -> None:
        waiting = list(self.plan.steps)
        running: dict[Future, Step] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(waiting)), thread_name_prefix="bp") as pool:
            while waiting or running:
                self._start_ready(waiting, running, pool)
                if not running:
                    if waiting:  # `after` names a step that is not in the plan: nothing can ever start them
                        raise BuildplaneError(f"step {waiting[0].id} waits for {waiting[0].after}, not in the plan")
                    break
                done, _ = wait(list(running), timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in done:
                    step = running.pop(future)
                    self.ctx.results[step.id] = future.result()

    def _start_ready(self, waiting: list[Step], running: dict[Future, Step], pool: ThreadPoolExecutor) -> None:
        """Start every step whose predecessors are done; one that can never run is marked so at once
        (which may decide the steps after it, hence the loop)."""
        while True:
            ready = [s for s in waiting if self._decided(s)]
            if not ready:
                return
            for step in ready:
                waiting.remove(step)
                if self._may_start(step):
                    running[pool.submit(self._step, step)] = step
                else:
                    self.ctx.results[step.id] = StepResult(step.kind, step.target, Status.NOT_RUN, "not run")

    def _decided(self, step: Step) -> bool:
        """Every predecessor has a result (so the step can start, or is known never to)."""
        return all(dep in self.ctx.results for dep in step.after)

    def _may_start(self, step: Step) -> bool:
        if self._stop.is_set() or self._interrupted.is_set():
            return False
        return all(self.ctx.results[dep].ok for dep in step.after)

    def _step(self, step: Step) -> StepResult:
        reporter = self.reporter if step.reported else NullReporter()
        reporter.step_started(self.plan, self.run_id, step)
        try:
            result = step.run(self.ctx)
        except BuildplaneError as exc:
            interrupted = isinstance(exc, Interrupted)
            result = StepResult(step.kind, step.target, Status.NOT_RUN if interrupted else Status.FAILED,
                                exc.message, exit_code=exc.exit_code, error=exc.message)
        except Exception as exc:  # a bug, or an input nobody foresaw: one failed step, never a lost run
            message = f"{step.id}: {internal_error(exc)}"
            self.ctx.log(message)
            if os.environ.get("BUILDPLANE_DEBUG"):
                traceback.print_exc()
            result = StepResult(step.kind, step.target, Status.FAILED, message, exit_code=1, error=message)
        reporter.step_finished(self.plan, self.run_id, step, result)
        if result.status == Status.FAILED:
            self._fail(step, result)
        elif step.target is not None and (result.status == Status.SUCCEEDED or
                                          (result.status == Status.FRESH and step.reported)):
            self.ctx.log(f"{step.target}: {step.kind} {result.status.value} — {result.reason} ({result.duration_s:.2f}s)")
        return result

    def _fail(self, step: Step, result: StepResult) -> None:
        if not self.plan.fail_fast:
            self.ctx.log(f"{step.target}: {step.kind} failed — {result.reason}")
            return
        if not self._stop.is_set():
            self._stop.set()
            self.ctx.log(f"{step.target}: failed — {result.error or result.reason}")
            run_mod.stop_all()  # cancel the other targets' running commands (a release in flight finishes)
