"""A rolling restart through Helm (#16): same image, new revision — never `kubectl rollout restart`.

`helm upgrade --reuse-values --set-string restartedAt=<now>`: the charts put `restartedAt` on the pod
template as an annotation, so the Deployment rolls its pods with everything else as the last release
left it. The upgrade waits like a release (`--wait`, rolled back on failure), is protected like one,
and the release record takes the new revision, so the next `up` still knows the live release as its own.

The working tree's chart is what the upgrade applies, so before it runs the step renders exactly that
(the live release's values, read with `helm get values`, plus the stamp, through `helm template`) and
passes it through the same guard as a release: nothing outside the mode's namespace, no cluster-scoped
kind the target does not allow. A restart never applies what `up` would refuse.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .. import guards
from ..state import StateDir, keep_file, read_json, write_json_atomic
from ..tools.manifests import rendered_objects
from .base import RunContext, Status, StepFields, StepResult
from .release import ReleaseFacts, helm_timeout_s, helm_upgrade, parse_revision

RESTART_KEY = "restartedAt"  # the chart value the pod template's annotation carries


@dataclass(frozen=True)
class RestartStep(StepFields):
    kind: ClassVar[str] = "restart"
    target: str
    mode: str
    release: str
    chart: Path
    namespace: str
    kube_context: str
    timeout: str
    history_max: int
    helm_major: int
    state: StateDir
    cluster_scoped: tuple[str, ...] = ()

    def argv(self, stamp: str = "<now, UTC>") -> list[str]:
        return ["helm", "upgrade", self.release, str(self.chart), "--namespace", self.namespace, "--kube-context",
                self.kube_context, "--reuse-values", "--set-string", f"{RESTART_KEY}={stamp}", "--wait",
                "--timeout", self.timeout, "--history-max", str(self.history_max),
                "--rollback-on-failure" if self.helm_major >= 4 else "--atomic"]

    def status_argv(self) -> list[str]:
        return ["helm", "status", self.release, "--namespace", self.namespace, "--kube-context", self.kube_context,
                "-o", "json"]

    def describe(self) -> dict:
        return {"argv": self.argv(), "applied": True,
                "guard": "rendered first (helm get values + helm template) and refused like a release"}

    def check(self, ctx: RunContext, stamp: str) -> None:
        """Render what the upgrade would apply and refuse it as a release would (exit 3), before it runs."""
        values = ctx.runner.run(["helm", "get", "values", self.release, "--namespace", self.namespace,
                                 "--kube-context", self.kube_context, "-o", "yaml"], timeout=60).stdout
        live = self.state.root / "values" / f"{self.mode}-{self.target}-live.yaml"
        keep_file(live, values.encode())  # 0600: the live values may hold what the release was given
        rendered = ctx.runner.run(["helm", "template", self.release, str(self.chart), "--namespace", self.namespace,
                                   "-f", str(live), "--set-string", f"{RESTART_KEY}={stamp}"], timeout=120).stdout
        guards.check_rendered(self.mode, self.target, self.namespace, rendered_objects(rendered), self.cluster_scoped)

    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.check(ctx, stamp)
        out = helm_upgrade(ctx, self.argv(stamp), helm_timeout_s(self.timeout), self.target, self.status_argv())
        revision = parse_revision(out.stdout)
        path = ctx.state.release_record(self.mode, self.target)
        record = read_json(path)
        if record and record.get("applied") and record.get("release") == self.release:
            write_json_atomic(path, {**record, "revision": revision, "restarted_at": stamp})
        facts = ReleaseFacts(self.release, self.namespace, (record or {}).get("image_digest") or "", True, revision)
        return StepResult(self.kind, self.target, Status.SUCCEEDED,
                          f"restarted at {stamp}: revision {revision}, same image", time.monotonic() - started, facts)
