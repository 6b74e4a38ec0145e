"""Build + push one image with buildx through the registry cache — or nothing, when it is fresh."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..freshness import changed_files, shown_paths
from ..specs import BuildSpec
from ..statefile import read_json, write_json_atomic
from ..tools import buildx
from ..tools.registry import RegistryClient
from ..errors import StepFailed
from ..tools.run import CommandFailed, Runner
from .result import Status, StepResult

BUILD_TIMEOUT_S = 3600.0
PUSH_ATTEMPTS = 3  # a registry 5xx or reset during the push: the build again (cached, so only the push), then give up
PUSH_BACKOFF_S = 1.0


@dataclass
class BuildEnv:
    """What a build step talks to; tests inject fakes."""

    runner: Runner
    registry: RegistryClient
    state_dir: Path
    log: Callable[[str], None]
    force: bool = False
    progress: Callable[[str, str], None] | None = None  # (target, line) for live builder output
    sleep: Callable[[float], None] = time.sleep
    _cache_ok: bool | None = field(default=None, repr=False)
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def registry_cache_ok(self) -> bool:
        """Asked once per run; a builder that cannot export registry cache gets inline cache instead."""
        with self._cache_lock:
            if self._cache_ok is None:
                ok, who = buildx.registry_cache_capability()
                if not ok:
                    self.log(f"note: {who} cannot export registry cache; falling back to inline cache "
                             "(enable the containerd image store or use a docker-container builder)")
                self._cache_ok = ok
            return self._cache_ok


def record_path(state_dir: Path, spec: BuildSpec) -> Path:
    return state_dir / "state" / f"build-{spec.mode}-{spec.target}.json"


def read_record(state_dir: Path, spec: BuildSpec) -> dict | None:
    return read_json(record_path(state_dir, spec))


def why_build(spec: BuildSpec, record: dict | None, force: bool) -> str:
    """A sentence saying why this target is being built."""
    if force:
        return "--force"
    if record is None or not record.get("files"):
        return f"no image for inputs digest {spec.content_tag}"
    changed = changed_files(record["files"], spec.inputs.files, limit=4)
    if not changed:
        return f"no image for inputs digest {spec.content_tag} in the final registry"
    rel = shown_paths(spec.context, changed[:3])
    more = " and more" if len(changed) > 3 else ""
    return f"{', '.join(rel)}{more} changed"


def run_build(spec: BuildSpec, env: BuildEnv) -> StepResult:
    started = time.monotonic()
    record = read_record(env.state_dir, spec)
    cache_info = {"import": bool(spec.cache_from), "export": bool(spec.cache_to), "cached_steps": 0, "total_steps": 0}
    facts = {"image": spec.ref, "content_ref": spec.content_ref, "cache_scope": spec.cache_scope, "cache": cache_info}
    if not env.force:
        digest = env.registry.manifest_digest(spec.content_ref)
        if digest:
            # The mode tag may carry the commit: add it registry-side if missing (no build, no upload).
            if env.registry.manifest_digest(spec.ref) != digest:
                env.registry.copy_tag(spec.content_ref, spec.tag)
            if record is None or record.get("inputs_digest") != spec.inputs.digest:
                _save(env, spec, digest)
            facts["digest"] = digest
            return StepResult("build", spec.target, Status.FRESH,
                              f"fresh: image for inputs digest {spec.content_tag} already in the final registry",
                              time.monotonic() - started, facts)
    reason = why_build(spec, record, env.force)
    env.registry.check_push_access(spec.ref)  # wrong credentials: fail before anything is built or pushed
    inline = bool(spec.cache_from or spec.cache_to) and not env.registry_cache_ok()
    # Inline cache travels in the image: import it from the last image this mode pushed.
    argv = spec.argv(inline_cache=inline, inline_from=(record or {}).get("ref"))
    spec.metadata_file.parent.mkdir(parents=True, exist_ok=True)
    spec.metadata_file.unlink(missing_ok=True)
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if env.progress:
            env.progress(spec.target, line)

    env.log(f"{spec.target}: building ({reason})")
    _build_and_push(spec, env, argv, lines, on_line)
    progress = buildx.parse_progress(lines)
    digest = buildx.read_metadata_digest(spec.metadata_file)
    if digest:  # the mode tag, added registry-side: the image left the builder once, under its content tag
        env.registry.copy_tag(spec.content_ref, spec.tag)
    cache_info.update(cached_steps=progress.cached_steps, total_steps=progress.total_steps)
    facts.update(digest=digest, cache=cache_info, inline_cache=inline)
    _save(env, spec, digest, cache_info)
    return StepResult("build", spec.target, Status.SUCCEEDED, reason, time.monotonic() - started, facts)


def _build_and_push(spec: BuildSpec, env: BuildEnv, argv: list[str], lines: list[str], on_line) -> None:
    """Run the build; a push the registry broke off (5xx, reset) is tried again, a bounded number of times."""
    delay = PUSH_BACKOFF_S
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        start = len(lines)
        try:
            env.runner.run(argv, timeout=BUILD_TIMEOUT_S, on_line=on_line)
            return
        except CommandFailed as exc:
            fault = buildx.push_failure(lines[start:] or exc.stderr_tail.splitlines())
            if fault is None:
                raise
            if attempt == PUSH_ATTEMPTS:
                raise StepFailed(f"{spec.target}: the push to registry {fault.registry} failed {attempt} times, "
                                 f"last with {fault.status} ({fault.url}); check the registry's health and logs") from None
            env.log(f"{spec.target}: registry {fault.registry} answered {fault.status} during the push; "
                    f"trying again in {delay:g}s ({attempt}/{PUSH_ATTEMPTS})")
            env.sleep(delay)
            delay *= 2


def _save(env: BuildEnv, spec: BuildSpec, digest: str | None, cache: dict | None = None) -> None:
    write_json_atomic(record_path(env.state_dir, spec), {
        "inputs_digest": spec.inputs.digest, "files": spec.inputs.files, "digest": digest, "ref": spec.ref,
        "content_ref": spec.content_ref, "cache": cache, "at": time.time(),
    })
