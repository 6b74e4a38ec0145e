"""What a step returns: a status and the facts the summary, events and the next step need."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Status(str, Enum):
    SUCCEEDED = "succeeded"  # did its work (built, applied, rendered, passed)
    FRESH = "fresh"  # nothing to do: inputs unchanged
    FAILED = "failed"
    NOT_RUN = "not-run"  # never started (an earlier step failed, cancelled, or not asked for)


@dataclass
class StepResult:
    kind: str
    target: str | None
    status: Status
    reason: str = ""
    duration_s: float = 0.0
    facts: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in (Status.SUCCEEDED, Status.FRESH)
