"""The release's render, started beside the build instead of after it.

Before a release is applied, the chart is rendered with its values (`helm template`) and every object
checked (guards.check_rendered); in render-only mode that output is the release. Helm takes ~80 ms for
it — a sixth of a sync across the network — and none of it depends on the image but the digest. So,
for a target whose build has work to do (its release will be new), the render runs while the image is
built or synced, with a stand-in digest in the image values file; the release then puts the real digest
in its place (`ReleaseStep.rendered`) and renders again only if the stand-in still shows (a chart that
shortens or hashes the digest).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

from ..state import write_json_atomic
from .base import RunContext, Status, StepFields, StepResult
from .release import STAND_IN, ReleaseStep


@dataclass
class RenderFacts:
    text: str

    def to_json(self) -> dict:
        return {"bytes": len(self.text)}


@dataclass(frozen=True)
class RenderStep(StepFields):
    kind: ClassVar[str] = "render"
    target: str
    release: ReleaseStep
    reported: bool = field(default=False, kw_only=True)  # part of the release's work; its failure fails the run

    def describe(self) -> dict:
        return {"action": f"render {self.release.release} while the image is made (digest stand-in, then the pushed one)",
                "argv": self.release.argv(template=True, image_values=self.values_file)}

    @property
    def values_file(self):
        return self.release.state.root / "values" / f"{self.release.mode}-{self.target}-image-render.json"

    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        write_json_atomic(self.values_file, {"image": {"repository": self.release.repo, "digest": STAND_IN}})
        out = ctx.runner.run(self.release.argv(template=True, image_values=self.values_file), timeout=120)
        return StepResult(self.kind, self.target, Status.SUCCEEDED, "rendered beside the build",
                          time.monotonic() - started, RenderFacts(out.stdout))
