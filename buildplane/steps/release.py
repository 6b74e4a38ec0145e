"""Release one target with Helm — only after its image was built or found fresh.

Applied with `helm upgrade --install` when an allowed kube context resolves; otherwise rendered
with `helm template` under the state dir and reported as `rendered`, never as applied.
A release whose inputs (chart, values, image digest, namespace, name) did not change is skipped.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from ..errors import Missing
from ..freshness import ImageInputs, StatCache, release_files, release_inputs
from ..state import read_json, write_json_atomic
from .base import RunContext, Status, StepFields, StepResult


@dataclass
class ReleaseFacts:
    release: str
    namespace: str
    image_digest: str
    applied: bool
    revision: int | None = None
    rendered: str | None = None

    def to_json(self) -> dict:
        return {"release": self.release, "namespace": self.namespace, "image_digest": self.image_digest,
                "applied": self.applied, "revision": self.revision, "rendered": self.rendered}


def helm_timeout_s(helm_timeout: str) -> float:
    total = 0
    for n, unit in re.findall(r"(\d+)([smh])", helm_timeout):
        total += int(n) * {"s": 1, "m": 60, "h": 3600}[unit]
    return float(total)


def parse_revision(helm_output: str) -> int | None:
    """`REVISION: 3` from `helm upgrade --install` output."""
    m = re.search(r"^REVISION:\s*(\d+)", helm_output, re.M)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class ReleaseStep(StepFields):
    kind: ClassVar[str] = "release"
    target: str
    mode: str
    release: str
    chart: Path
    namespace: str
    kube_context: str | None
    values: tuple[Path, ...]
    repo: str
    timeout: str
    history_max: int
    helm_major: int
    render_only: bool  # no reachable allowed context: helm template, never applied
    image: ImageInputs | None = None  # what the image is built from, recorded for `status`


    def argv(self, digest: str) -> list[str]:
        if self.render_only:
            argv = ["helm", "template", self.release, str(self.chart), "--namespace", self.namespace]
        else:
            argv = ["helm", "upgrade", "--install", self.release, str(self.chart), "--namespace", self.namespace,
                    "--kube-context", str(self.kube_context)]
        for v in self.values:
            argv += ["-f", str(v)]
        argv += ["--set", f"image.repository={self.repo}", "--set", f"image.digest={digest}"]
        if not self.render_only:
            argv += ["--wait", "--timeout", self.timeout, "--history-max", str(self.history_max)]
            # Helm 4 renamed --atomic; both roll back a failed upgrade.
            argv.append("--rollback-on-failure" if self.helm_major >= 4 else "--atomic")
        return argv

    def describe(self) -> dict:
        return {"argv": self.argv("<digest pushed by build>"), "applied": not self.render_only}

    def digest(self, image_digest: str, cache: StatCache) -> str:
        chart, values = release_files(self.chart, self.values, cache)
        return release_inputs(chart_files=chart, values_files=values, image_digest=image_digest,
                              namespace=self.namespace, release=self.release,
                              extra={"context": str(self.kube_context), "render": str(self.render_only)})

    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        build = ctx.result(self.after[0])
        image_digest = build.facts.digest if build is not None and build.facts is not None else None
        if not image_digest:
            raise Missing(f"{self.target}: no pushed image digest to release")
        inputs = self.digest(image_digest, ctx.release_cache)
        record_path = ctx.state.release_record(self.mode, self.target)
        previous = read_json(record_path)
        facts = ReleaseFacts(self.release, self.namespace, image_digest, not self.render_only)
        if not ctx.force and self._fresh(ctx, previous, inputs, facts):
            return StepResult("release", self.target, Status.FRESH,
                              "fresh: chart, values and image unchanged since the last release",
                              time.monotonic() - started, facts)
        reason = "--force" if ctx.force else ("first release" if not previous else
                                               "new image digest" if previous.get("image_digest") != image_digest
                                               else "chart or values changed")
        result = ctx.runner.run(self.argv(image_digest), timeout=helm_timeout_s(self.timeout) + 60)
        if self.render_only:
            out = ctx.state.rendered(self.mode, self.target)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(result.stdout)
            facts.rendered = str(out)
        else:
            facts.revision = parse_revision(result.stdout)
        self._record(ctx, record_path, inputs, facts)
        return StepResult("release", self.target, Status.SUCCEEDED, reason, time.monotonic() - started, facts)

    def _fresh(self, ctx: RunContext, previous: dict | None, inputs: str, facts: ReleaseFacts) -> bool:
        if not previous or previous.get("inputs") != inputs:
            return False
        if self.render_only and not ctx.state.rendered(self.mode, self.target).is_file():
            return False
        facts.revision, facts.rendered = previous.get("revision"), previous.get("rendered")
        if self.image is not None and previous.get("image_inputs_digest") != self.image.digest:
            # Other inputs, the same image: what runs is what this tree builds, so record it for `status`.
            write_json_atomic(ctx.state.release_record(self.mode, self.target), {
                **previous, "image_inputs_digest": self.image.digest, "image_files": self.image.files})
        return True

    def _record(self, ctx: RunContext, path: Path, inputs: str, facts: ReleaseFacts) -> None:
        """What went out, file by file, so `status` can say which edit has not reached the cluster."""
        chart, values = release_files(self.chart, self.values, ctx.release_cache)
        write_json_atomic(path, {
            "inputs": inputs, "image_digest": facts.image_digest, "revision": facts.revision,
            "rendered": facts.rendered, "at": time.time(), "applied": not self.render_only, "release": self.release,
            "namespace": self.namespace, "kube_context": self.kube_context,
            "image_inputs_digest": self.image.digest if self.image else None,
            "image_files": self.image.files if self.image else None, "chart_files": chart, "values_files": values,
        })
