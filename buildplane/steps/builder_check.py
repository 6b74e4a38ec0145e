"""Is the chosen builder there? Asked before any target starts, when some target may build (#17).

A builder that is down (a remote daemon, a BuildKit pool, a Kubernetes builder) fails the run with
exit 4 naming it and the command that checks it — before any build, push or release begins. The
answer is kept for CHECK_TTL_S, so the edit loop does not pay a round trip to the builder on every
run; a builder that goes down within that time fails its build, which says so too. A run with
nothing to build has no check at all: the no-op path needs no builder.
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import Missing
from ..state import read_json, write_json_atomic
from ..tools.builders import BuilderChoice, inspect_problem
from ..tools.run import CommandFailed
from .base import RunContext, Status, StepFields, StepResult

CHECK_TTL_S = 300.0
CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BuilderCheckStep(StepFields):
    kind: ClassVar[str] = "builder-check"
    choice: BuilderChoice
    target: None = None
    reported: bool = field(default=False, kw_only=True)  # not a Build Plane Event step; its failure fails the run

    @property
    def id(self) -> str:
        return self.kind

    def describe(self) -> dict:
        return {"action": f"check that {self.choice.label} answers (kept {CHECK_TTL_S:g} s)",
                "argv": self.choice.inspect_argv()}

    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        path = ctx.state.root / "state" / "builder-checks.json"
        seen = read_json(path) or {}
        last = seen.get(self.choice.key())
        if isinstance(last, (int, float)) and 0 <= time.time() - last < CHECK_TTL_S:
            return StepResult(self.kind, None, Status.FRESH, f"{self.choice.label} answered {time.time() - last:.0f}s ago",
                              time.monotonic() - started)
        argv = self.choice.inspect_argv()
        try:
            res = ctx.runner.run(argv, timeout=CHECK_TIMEOUT_S)
            problem = inspect_problem(res.stdout + "\n" + res.stderr)
        except CommandFailed as exc:
            tail = (exc.stderr_tail or "").strip().splitlines()
            problem = inspect_problem(exc.stderr_tail or "") or (tail[-1] if tail else "")
        if problem is not None:
            raise Missing(f"{self.choice.label} ({self.choice.source}) does not answer"
                          f"{': ' + problem[:200] if problem else ''}; check it with `{shlex.join(argv)}` "
                          "(and `docker buildx ls`)")
        try:
            write_json_atomic(path, {**seen, self.choice.key(): time.time()})
        except OSError:
            pass  # only the next run asks again
        return StepResult(self.kind, None, Status.SUCCEEDED, f"{self.choice.label} answers", time.monotonic() - started)
