"""Release one target with Helm — only after its image was built or found fresh.

Applied with `helm upgrade --install` when an allowed kube context resolves; otherwise rendered
with `helm template` under .buildplane/rendered/ and reported as `rendered`, never as applied.
A release whose inputs (chart, values, image digest, namespace, name) did not change is skipped.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..freshness import ImageInputs, StatCache, release_inputs, tree_hashes
from ..specs import ReleaseSpec
from ..statefile import read_json, write_json_atomic
from ..tools.run import Runner
from .result import Status, StepResult


@dataclass
class ReleaseEnv:
    runner: Runner
    state_dir: Path
    log: Callable[[str], None]
    force: bool = False


def _timeout_s(helm_timeout: str) -> float:
    total = 0
    for n, unit in re.findall(r"(\d+)([smh])", helm_timeout):
        total += int(n) * {"s": 1, "m": 60, "h": 3600}[unit]
    return float(total)


def release_files(chart: Path, values: tuple[Path, ...], cache: StatCache) -> tuple[dict[str, str], dict[str, str]]:
    """(chart file hashes, values file hashes): what a release is made of besides the image."""
    return tree_hashes(chart, cache), {str(v): cache.file_hash(str(v), v.stat()) for v in values}


def release_digest(spec: ReleaseSpec, image_digest: str, cache: StatCache) -> str:
    chart, values = release_files(spec.chart, spec.values, cache)
    return release_inputs(chart_files=chart, values_files=values, image_digest=image_digest,
                          namespace=spec.namespace, release=spec.release,
                          extra={"context": str(spec.kube_context), "render": str(spec.render_only)})


def state_path(state_dir: Path, spec: ReleaseSpec) -> Path:
    return release_record_path(state_dir, spec.mode, spec.target)


def release_record_path(state_dir: Path, mode: str, target: str) -> Path:
    return state_dir / "state" / f"release-{mode}-{target}.json"


def read_state(state_dir: Path, spec: ReleaseSpec) -> dict | None:
    return read_json(state_path(state_dir, spec))


def parse_revision(helm_output: str) -> int | None:
    """`REVISION: 3` from `helm upgrade --install` output."""
    m = re.search(r"^REVISION:\s*(\d+)", helm_output, re.M)
    return int(m.group(1)) if m else None


def rendered_path(state_dir: Path, spec: ReleaseSpec) -> Path:
    return state_dir / "rendered" / f"{spec.mode}-{spec.target}.yaml"


def run_release(spec: ReleaseSpec, image_digest: str, env: ReleaseEnv, cache: StatCache,
                image: ImageInputs | None = None) -> StepResult:
    started = time.monotonic()
    inputs = release_digest(spec, image_digest, cache)
    previous = read_state(env.state_dir, spec)
    facts = {"release": spec.release, "namespace": spec.namespace, "image_digest": image_digest,
             "applied": not spec.render_only}
    if not env.force and previous and previous.get("inputs") == inputs and (
            not spec.render_only or rendered_path(env.state_dir, spec).is_file()):
        facts["revision"] = previous.get("revision")
        facts["rendered"] = previous.get("rendered")
        if image is not None and previous.get("image_inputs_digest") != image.digest:
            # Other inputs, the same image: what runs is what this tree builds, so record it for `status`.
            write_json_atomic(state_path(env.state_dir, spec), {
                **previous, "image_inputs_digest": image.digest, "image_files": image.files})
        return StepResult("release", spec.target, Status.FRESH, "fresh: chart, values and image unchanged since the last release",
                          time.monotonic() - started, facts)
    reason = "--force" if env.force else ("first release" if not previous else _what_changed(previous, inputs, image_digest))
    argv = spec.argv(image_digest)
    timeout = _timeout_s(spec.timeout) + 60
    result = env.runner.run(argv, timeout=timeout)
    if spec.render_only:
        out = rendered_path(env.state_dir, spec)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.stdout)
        facts["rendered"] = str(out)
        facts["revision"] = None
    else:
        facts["revision"] = parse_revision(result.stdout)
    chart, values = release_files(spec.chart, spec.values, cache)
    # What went out, file by file, so `status` can say which edit has not reached the cluster.
    write_json_atomic(state_path(env.state_dir, spec), {
        "inputs": inputs, "image_digest": image_digest, "revision": facts["revision"], "rendered": facts.get("rendered"),
        "at": time.time(), "applied": not spec.render_only, "release": spec.release, "namespace": spec.namespace,
        "kube_context": spec.kube_context, "image_inputs_digest": image.digest if image else None,
        "image_files": image.files if image else None, "chart_files": chart, "values_files": values,
    })
    return StepResult("release", spec.target, Status.SUCCEEDED, reason, time.monotonic() - started, facts)


def _what_changed(previous: dict, inputs: str, image_digest: str) -> str:
    if previous.get("image_digest") != image_digest:
        return "new image digest"
    return "chart or values changed"
