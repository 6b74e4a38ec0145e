"""The engine reports run and step starts/ends here; steps know nothing of sinks (DESIGN §2, §8).

EventReporter turns the lifecycle into Build Plane Events and hands each to every sink's own bounded
queue (a put, never a wait: a full queue drops and counts). One worker thread per sink sends batches,
so a slow Collector never holds up the file sink or the build. At exit the flush is bounded in time:
a sink known to work gets FLUSH_S, a sink still starting or with its first send out gets UNKNOWN_S,
a failing sink none; whatever is left is counted as dropped. Strict mode waits longer and fails the run on any loss.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from . import events
from .sinks import SinkError

FLUSH_S = 2.0
UNKNOWN_S = 0.03
STRICT_FLUSH_S = 5.0
QUEUE_MAX = 1000
BATCH_MAX = 200
_STOP = object()


class Reporter:
    """Receives the engine's lifecycle; subclasses turn it into Build Plane Events."""

    def run_started(self, plan, run_id: str) -> None: ...

    def step_started(self, plan, run_id: str, step) -> None: ...

    def step_finished(self, plan, run_id: str, step, result) -> None: ...

    def run_finished(self, summary) -> None: ...


class NullReporter(Reporter):
    """Reports nothing."""


class SinkWorker:
    """One sink behind a bounded queue and its own thread. `make` builds the sink in that thread,
    so importing an exporter never costs the run's own thread."""

    def __init__(self, name: str, where: str, make: Callable[[], object], maxsize: int = QUEUE_MAX) -> None:
        self.name, self.where = name, where
        self._make = make
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.accepted = self.sent = self.lost = self.overflow = 0  # lost: failed sends; overflow: queue full
        self.error = ""
        self.state = "starting"  # starting | sending | ok | failing
        self._closed = False  # once close() has counted what is left, late results change nothing
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name=f"bp-sink-{name}", daemon=True)
        self.thread.start()

    def offer(self, event: events.Event) -> None:
        try:
            self.queue.put_nowait(event)
            with self._lock:
                self.accepted += 1
        except queue.Full:
            with self._lock:
                self.overflow += 1

    @property
    def pending(self) -> int:
        return self.accepted - self.sent - self.lost

    @property
    def dropped(self) -> int:
        return self.lost + self.overflow

    def _fail(self, message: str, lost: int) -> None:
        with self._lock:
            if self._closed:
                return
            self.lost += lost
            self.error = self.error or message
            self.state = "failing"

    def _loop(self) -> None:
        try:
            sink = self._make()
        except Exception as exc:  # a sink that cannot even start loses everything it is given
            self._fail(f"cannot start: {type(exc).__name__}: {events.redact(str(exc))}", 0)
            sink = None
        self.state = "sending" if sink is not None else "failing"
        stop = False
        while not stop:
            batch = []
            item = self.queue.get()
            while True:
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
                if len(batch) >= BATCH_MAX:
                    break
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            if not batch:
                continue
            if sink is None:
                self._fail(self.error, len(batch))
                continue
            try:
                sink.send(batch)
                with self._lock:
                    if self._closed:
                        continue
                    self.sent += len(batch)
                    if self.state != "failing":
                        self.state = "ok"
            except SinkError as exc:
                self._fail(events.redact(str(exc)), len(batch))
            except Exception as exc:  # a sink's bug must not take the run down with it
                self._fail(f"{type(exc).__name__}: {events.redact(str(exc))}", len(batch))

    def close(self, strict: bool) -> None:
        """Stop the worker, waiting as long as its state earns (see the module's docstring)."""
        try:
            self.queue.put_nowait(_STOP)
        except queue.Full:
            pass  # the worker drains it; the idle check below ends the wait
        started = time.monotonic()
        state = self.state
        while self.thread.is_alive():
            waited = time.monotonic() - started
            state = self.state
            limit = STRICT_FLUSH_S if strict else {"ok": FLUSH_S, "failing": 0.0}.get(state, UNKNOWN_S)
            if waited >= limit:
                break
            if self.pending == 0 and state in ("ok", "failing"):
                break
            self.thread.join(0.002)
        with self._lock:
            self._closed = True
            left = self.pending
            if left:
                self.lost += left
                self.error = self.error or f"{left} event(s) still unsent at exit ({state})"

    def to_json(self) -> dict:
        out = {"where": self.where, "sent": self.sent, "dropped": self.dropped}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class TelemetryReport:
    events: int
    sinks: dict[str, dict] = field(default_factory=dict)
    strict: bool = False

    @property
    def dropped(self) -> int:
        return sum(s["dropped"] for s in self.sinks.values())

    def failed_sinks(self) -> list[str]:
        return [f"{n} ({s['where']}): {s.get('error') or str(s['dropped']) + ' dropped'}"
                for n, s in self.sinks.items() if s["dropped"] or s.get("error")]

    def to_json(self) -> dict:
        return {"events": self.events, "dropped": self.dropped, "strict": self.strict, "sinks": self.sinks}


class EventReporter(Reporter):
    def __init__(self, workers: list[SinkWorker], *, strict: bool = False, environ=None) -> None:
        self.workers = workers
        self.strict = strict
        self.secrets = events.secret_values(environ)
        self.count = 0
        self.revision: str | None = None

    def emit(self, event: events.Event) -> None:
        """An event from outside the engine's lifecycle (a background cache export's end)."""
        self._emit(event)

    def _emit(self, event: events.Event) -> None:
        self.count += 1
        for w in self.workers:
            w.offer(event)

    def run_started(self, plan, run_id: str) -> None:
        self.revision = getattr(plan, "revision", None)
        self._emit(events.run_started(plan, run_id, self.secrets))

    def step_started(self, plan, run_id: str, step) -> None:
        self._emit(events.step_started(plan, run_id, step, self.secrets))

    def step_finished(self, plan, run_id: str, step, result) -> None:
        self._emit(events.step_finished(plan, run_id, step, result, self.secrets))

    def run_finished(self, summary) -> None:
        self._emit(events.run_finished(summary, self.revision, self.secrets))

    def close(self) -> TelemetryReport:
        """Flush every sink within its budget (in parallel); say what was sent and what was lost."""
        closers = [threading.Thread(target=w.close, args=(self.strict,)) for w in self.workers]
        for t in closers:
            t.start()
        for t in closers:
            t.join()
        return TelemetryReport(self.count, {w.name: w.to_json() for w in self.workers}, self.strict)
