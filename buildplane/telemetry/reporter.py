"""The engine reports run and step starts/ends here; steps know nothing of sinks (DESIGN §2, §8)."""
from __future__ import annotations


class Reporter:
    """Receives the engine's lifecycle; subclasses turn it into Build Plane Events."""

    def run_started(self, plan, run_id: str) -> None: ...

    def step_started(self, plan, run_id: str, step) -> None: ...

    def step_finished(self, plan, run_id: str, step, result) -> None: ...

    def run_finished(self, summary) -> None: ...


class NullReporter(Reporter):
    """Reports nothing."""
