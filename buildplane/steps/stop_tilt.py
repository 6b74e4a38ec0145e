"""Deploy mode's first step: stop every Tilt of this working tree (the one `buildplane tilt up` recorded,
and one started by hand here), so nothing rebuilds into the dev namespace behind Argo CD's back. A Tilt
that runs this handback (its deploy-mode resource) is stopped right after it. Says which it stopped."""
from __future__ import annotations

import shutil
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
        return {"action": f"stop the Tilt process recorded in {self.record} by `buildplane tilt up` and any "
                          f"`tilt up` started by hand in this working tree (TERM, then KILL after "
                          f"{tilt.STOP_GRACE_S:g}s); a Tilt running this handback is stopped after it"}

    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        # A Tilt started by hand in this tree runs the `tilt` on PATH (none there: only the recorded one). A
        # Tilt that runs this handback (the UI's deploy-mode button) is stopped once the handback has ended.
        said = tilt.stop(self.record, sleep=ctx.sleep, binary=shutil.which("tilt"))
        ctx.log(said)
        return StepResult("stop-tilt", None, Status.SUCCEEDED, said, time.monotonic() - started, StopTiltFacts(said))
