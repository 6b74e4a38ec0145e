"""Release one target with Helm — only after its image was built or found fresh.

Applied with `helm upgrade --install` when an allowed kube context resolves; otherwise rendered
with `helm template` under the state dir and reported as `rendered`, never as applied.
A release whose inputs (chart, values, image digest, namespace, name) did not change is skipped —
unless the live release moved on (a teammate's upgrade): one read-only `helm status` says so.

Before anything is applied the chart is rendered with the same values and every object checked:
nothing may land outside the mode's namespace (guards.check_rendered). The image reaches Helm in a
values file, never `--set`, and only as a valid digest. The upgrade is a protected command: another
target's failure never interrupts it, and an interrupt gives it time to finish or roll back; if it
ends badly, `helm status` says what it left behind.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from .. import guards
from ..errors import Missing, StepFailed
from ..freshness import ImageInputs, StatCache, release_files, release_inputs
from ..state import StateDir, packed, read_json, write_json_atomic
from ..tools.manifests import release_status, rendered_objects, rolled_back_to
from ..tools.run import CommandFailed
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


STAND_IN = "sha256:" + "0" * 64  # the early render's digest (steps/render.py): no image has it


def live_release(ctx: RunContext, status_argv: list[str]) -> tuple[str, int | None]:
    """The live release's status and revision: one read-only call, allowed even after an interrupt."""
    status, revision, _ = _live_release(ctx, status_argv)
    return status, revision


def _live_release(ctx: RunContext, status_argv: list[str]) -> tuple[str, int | None, int | None]:
    """(status, revision, the revision a rollback copied or None)."""
    try:
        out = ctx.runner.run(status_argv, timeout=30, even_if_cancelled=True, check=False)
    except Missing:
        return "unknown", None, None
    if out.exit_code != 0:
        return ("not installed" if "not found" in out.stderr else "unknown"), None, None
    return (*release_status(out.stdout), rolled_back_to(out.stdout))


def helm_upgrade(ctx: RunContext, argv: list[str], timeout_s: float, target: str, status_argv: list[str]):
    """The one mutation (an upgrade or a restart); protected from other targets' failures and given a grace
    on interrupt by the runner; on failure, what Helm left and how to recover."""
    try:
        return ctx.runner.run(argv, timeout=timeout_s + 60, protected=True)
    except CommandFailed as exc:
        status, revision, copied = _live_release(ctx, status_argv)
        how = "was stopped by a signal" if exc.signalled else "timed out" if exc.timed_out else "failed"
        last = exc.stderr_tail.strip().splitlines()[-1] if exc.stderr_tail.strip() else "no output"
        release, namespace, context = status_argv[2], status_argv[4], status_argv[6]
        left = f"Helm left the release {status}" + (f" at revision {revision}" if revision else "")
        if copied is not None and status == "deployed":  # --rollback-on-failure did its work
            left = (f"Helm rolled it back: revision {revision}, a copy of revision {copied}, is deployed, "
                    "so what ran before still runs")
        if status.startswith("pending"):
            left += (f"; recover with `helm rollback {release} -n {namespace} --kube-context {context}` "
                     "before the next release")
        raise StepFailed(f"{target}: helm {argv[1]} of {release} {how} ({last}); {left}") from None


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
    state: StateDir = StateDir(Path(".buildplane"))  # where the image values file is written
    cluster_scoped: tuple[str, ...] = ()  # cluster-scoped kinds the chart may create
    render_id: str | None = None  # a render started beside the build (steps/render.py), when there is one

    def argv(self, template: bool | None = None, image_values: Path | None = None) -> list[str]:
        """`helm upgrade --install` (or `helm template` when rendering only, or to check first)."""
        template = self.render_only if template is None else template
        if template:
            argv = ["helm", "template", self.release, str(self.chart), "--namespace", self.namespace]
        else:
            argv = ["helm", "upgrade", "--install", self.release, str(self.chart), "--namespace", self.namespace,
                    "--kube-context", str(self.kube_context)]
        for v in (*self.values, image_values or self.image_values):
            argv += ["-f", str(v)]
        if not template:
            argv += ["--wait", "--timeout", self.timeout, "--history-max", str(self.history_max)]
            # Helm 4 renamed --atomic; both roll back a failed upgrade.
            argv.append("--rollback-on-failure" if self.helm_major >= 4 else "--atomic")
        return argv

    @property
    def image_values(self) -> Path:
        return self.state.image_values(self.mode, self.target)

    def status_argv(self) -> list[str]:
        return ["helm", "status", self.release, "--namespace", self.namespace, "--kube-context",
                str(self.kube_context), "-o", "json"]

    def describe(self) -> dict:
        return {"argv": self.argv(), "applied": not self.render_only,
                "image_values": {"image": {"repository": self.repo, "digest": "<digest pushed by build>"}}}

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
        guards.check_digest(self.target, image_digest)
        inputs = self.digest(image_digest, ctx.release_cache)
        record_path = ctx.state.release_record(self.mode, self.target)
        previous = read_json(record_path)
        facts = ReleaseFacts(self.release, self.namespace, image_digest, not self.render_only)
        stale = "--force" if ctx.force else self._stale(ctx, previous, inputs, image_digest)
        if stale is None:
            facts.revision, facts.rendered = previous.get("revision"), previous.get("rendered")
            return StepResult("release", self.target, Status.FRESH,
                              "fresh: chart, values and image unchanged since the last release",
                              time.monotonic() - started, facts)
        write_json_atomic(self.image_values, {"image": {"repository": self.repo, "digest": image_digest}})
        rendered = self.rendered(ctx, image_digest)
        guards.check_rendered(self.mode, self.target, self.namespace, rendered_objects(rendered), self.cluster_scoped)
        if self.render_only:
            out = ctx.state.rendered(self.mode, self.target)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(rendered)
            facts.rendered = str(out)
        else:
            facts.revision = parse_revision(self._upgrade(ctx).stdout)
        self._record(ctx, record_path, inputs, facts)
        return StepResult("release", self.target, Status.SUCCEEDED, stale, time.monotonic() - started, facts)

    def rendered(self, ctx: RunContext, image_digest: str) -> str:
        """The chart rendered with the image: the early render with the digest put in (steps/render.py), or,
        without one — or where the chart made something else of the stand-in — `helm template` now."""
        early = ctx.result(self.render_id) if self.render_id else None
        if early is not None and early.status == Status.SUCCEEDED and early.facts is not None:
            text = early.facts.text.replace(STAND_IN, image_digest)
            if STAND_IN[7:23] not in text:  # no shortened or reshaped stand-in left
                return text
        return ctx.runner.run(self.argv(template=True), timeout=120).stdout

    def _upgrade(self, ctx: RunContext):
        return helm_upgrade(ctx, self.argv(), helm_timeout_s(self.timeout), self.target, self.status_argv())

    def _live(self, ctx: RunContext) -> tuple[str, int | None]:
        return live_release(ctx, self.status_argv())

    def _stale(self, ctx: RunContext, previous: dict | None, inputs: str, image_digest: str) -> str | None:
        """None when the last release is still what runs; else why a new one is needed."""
        if not previous:
            return "first release"
        if previous.get("image_digest") != image_digest:
            return "new image digest"
        if previous.get("inputs") != inputs:
            return "chart or values changed"
        if self.render_only and not ctx.state.rendered(self.mode, self.target).is_file():
            return "rendered output missing"
        if not self.render_only:
            status, revision = self._live(ctx)
            if status != "deployed" or revision != previous.get("revision"):
                return (f"the live release is {status}" + (f" at revision {revision}" if revision else "") +
                        f", not buildplane's revision {previous.get('revision')} (upgraded by someone else?)")
        if self.image is not None and previous.get("image_inputs_digest") != self.image.digest:
            # Other inputs, the same image: what runs is what this tree builds, so record it for `status`.
            write_json_atomic(ctx.state.release_record(self.mode, self.target), {
                **previous, "image_inputs_digest": self.image.digest, "image_files": packed(self.image.files)})
        return None

    def _record(self, ctx: RunContext, path: Path, inputs: str, facts: ReleaseFacts) -> None:
        """What went out, file by file, so `status` can say which edit has not reached the cluster."""
        chart, values = release_files(self.chart, self.values, ctx.release_cache)
        write_json_atomic(path, {
            "inputs": inputs, "image_digest": facts.image_digest, "revision": facts.revision,
            "rendered": facts.rendered, "at": time.time(), "applied": not self.render_only, "release": self.release,
            "namespace": self.namespace, "kube_context": self.kube_context,
            "image_inputs_digest": self.image.digest if self.image else None,
            "image_files": packed(self.image.files) if self.image else None, "chart_files": chart,
            "values_files": values,
        })
