"""The mode tag of a freshly pushed image, added registry-side while the release runs.

The image left the builder once, under its content tag; the mode tag (what people and Tilt read) is a
manifest copy in the registry: a GET and a PUT (one PUT when buildplane pushed the manifest itself and
has its bytes), round trips that the release need not wait for, since Helm gets the image by digest.
Its failure fails the run; until it succeeds the build record does not say "tagged", so the next run
adds the tag again rather than trusting it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

from ..state import read_json, write_json_atomic
from ..tools.registry import Ref
from .base import RunContext, Status, StepFields, StepResult
from .build import BuildStep


@dataclass(frozen=True)
class TagStep(StepFields):
    kind: ClassVar[str] = "tag"
    target: str
    build: BuildStep
    reported: bool = field(default=False, kw_only=True)  # part of the build's work; its failure still fails the run

    def describe(self) -> dict:
        return {"tag": f"{self.build.ref}: a manifest copy of {self.build.content_ref}, registry-side, "
                       "while the release runs (no second push)"}

    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        built = ctx.result(self.build.id)
        if built is None or built.status != Status.SUCCEEDED or not built.facts_json().get("digest"):
            return StepResult(self.kind, self.target, Status.FRESH, "nothing pushed this run", 0.0)
        if built.facts_json().get("synced"):
            return StepResult(self.kind, self.target, Status.FRESH, "the sync stored its manifest under this tag", 0.0)
        manifest = getattr(built.facts, "manifest", None)
        if manifest is not None:  # buildplane pushed it: the same bytes under the mode tag, one PUT
            ref = Ref.parse(self.build.content_ref)
            ctx.registry.put_manifest(ref.host, ref.repo, self.build.tag, *manifest)
        else:
            ctx.registry.copy_tag(self.build.content_ref, self.build.tag)
        path = ctx.state.build_record(self.build.mode, self.target)
        record = read_json(path)
        if record and record.get("content_ref") == self.build.content_ref:
            write_json_atomic(path, {**record, "tagged": True})
        return StepResult(self.kind, self.target, Status.SUCCEEDED, f"tagged {self.build.tag} registry-side",
                          time.monotonic() - started)
