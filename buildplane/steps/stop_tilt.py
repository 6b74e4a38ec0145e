"""Deploy mode's first step: stop the Tilt process `buildplane tilt up` recorded, so nothing rebuilds
into the dev namespace behind Argo CD's back. Says honestly whether one was running."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..tools import tilt
from .base import RunContext, Status, StepFields, StepResult


@dataclass
class StopTiltFacts:
    tilt: str  # what happened, in one sentence

    def to_json(self) -> dict:
        return {"tilt": self.tilt}


@dataclass(frozen=True)
class StopTiltStep(StepFields):
    kind: ClassVar[str] = "stop-tilt"
    record: Path  # where `buildplane tilt up` recorded the process it became
    target: ClassVar[None] = None
    reported: bool = field(default=False, kw_only=True)  # not an event step (DESIGN §8): its sentence is the summary's `tilt`

    @property
    def id(self) -> str:
        return "stop-tilt"

    def describe(self) -> dict:
        return {"action": f"stop the Tilt process recorded in {self.record} by `buildplane tilt up` "
                          f"(TERM, then KILL after {tilt.STOP_GRACE_S:g}s), if it still runs"}

    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        said = tilt.stop(self.record, sleep=ctx.sleep)
        ctx.log(said)
        return StepResult("stop-tilt", None, Status.SUCCEEDED, said, time.monotonic() - started, StopTiltFacts(said))
