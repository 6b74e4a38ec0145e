"""What every step is to the engine: an id, what it waits for, what it describes, and `run(ctx)`.

A step kind is one module of this package: its frozen spec (the dataclass itself), `describe()`
for `plan`, and `run(ctx) -> StepResult` with typed facts. The engine knows only this protocol;
everything a step talks to comes in through `RunContext`, so tests inject fakes there.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Protocol

from ..state import StateDir
from ..tools import run as _run


class Status(str, Enum):
    SUCCEEDED = "succeeded"  # did its work (built, applied, rendered, passed)
    FRESH = "fresh"  # nothing to do: inputs unchanged
    FAILED = "failed"
    NOT_RUN = "not-run"  # never started (an earlier step failed, cancelled, or not asked for)


class Facts(Protocol):
    """What a step found out, typed per step kind; `to_json` is what summaries and events read."""

    def to_json(self) -> dict: ...


@dataclass
class StepResult:
    kind: str
    target: str | None
    status: Status
    reason: str = ""
    duration_s: float = 0.0
    facts: Any = None  # the step kind's own Facts type, or None
    exit_code: int = 1  # for a failure: the CLI code it stands for (4: something missing)
    error: str = ""  # for a step that raised: the error's own message

    @property
    def ok(self) -> bool:
        return self.status in (Status.SUCCEEDED, Status.FRESH)

    def facts_json(self) -> dict:
        return self.facts.to_json() if self.facts is not None else {}


class Step(Protocol):
    id: str  # "build:runtime"
    kind: str  # build | release | smoke | stop-tilt | handback
    target: str | None
    after: tuple[str, ...]  # ids of the steps that must succeed first
    lock: str | None  # a target name: one run at a time may work on it
    note: str
    reported: bool  # whether it is a Build Plane Event step (DESIGN §8 lists which are)

    def describe(self) -> dict: ...

    def run(self, ctx: "RunContext") -> StepResult: ...


@dataclass(frozen=True, kw_only=True)
class StepFields:
    """What every step kind has besides its own spec; a kind sets `kind` and its spec fields."""

    kind: ClassVar[str]
    after: tuple[str, ...] = ()
    lock: str | None = None
    note: str = ""
    reported: bool = True

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.target}"


@dataclass
class BuilderCaps:
    """What the builder can do (`tools.buildx.BuilderInfo`): asked once per run, through `probe`; and how
    many builds it takes at once (`max_parallel`: the builder's own limit when None)."""

    probe: Callable[[], Any]
    max_parallel: int | None = None
    _answer: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _slots: threading.Semaphore | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_parallel:
            self._slots = threading.BoundedSemaphore(self.max_parallel)

    @contextmanager
    def slot(self, waiting: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Hold one of the builder's build slots; `waiting` is told when none is free."""
        if self._slots is None:
            yield
            return
        if not self._slots.acquire(blocking=False):
            waiting()
            self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    def info(self):
        with self._lock:
            if self._answer is None:
                self._answer = self.probe()
            return self._answer

    def registry_cache(self) -> tuple[bool, str]:
        info = self.info()
        return info.registry_cache, info.who


@dataclass
class RunContext:
    """The I/O seams of one run and the results so far. Built by a command; tests build their own."""

    state: StateDir
    log: Callable[[str], None]
    runner: Any = None  # tools.run.Runner
    registry: Any = None  # tools.registry.RegistryClient
    builder: BuilderCaps | None = None
    argo: Any = None  # tools.argocd.ArgoClient
    http: Any = None  # httpx.Client for route smoke (None: one per step)
    release_cache: Any = None  # freshness.StatCache for release inputs
    force: bool = False
    run_id: str = ""  # set by the engine
    progress: Callable[[str, str], None] | None = None  # (target, line): live builder output
    sleep: Callable[[float], None] = _run.sleep  # ends at once on an interrupt
    now: Callable[[], float] = time.monotonic
    browser: threading.Lock = field(default_factory=threading.Lock)  # one Chromium at a time: heavy on 2 cores
    results: dict[str, StepResult] = field(default_factory=dict)

    def result(self, step_id: str) -> StepResult | None:
        return self.results.get(step_id)
