"""Build + push one image with buildx through the registry cache — or nothing, when it is fresh.

Fresh: this machine's record says the image for these inputs went out under both tags (no registry
call at all), or the final registry already has the image's content tag (one HEAD, with the push scope:
wrong credentials fail there, before anything is built); the mode tag is then added registry-side if
missing. Otherwise the image is built and leaves the builder once, under the content tag (steps/push.py
says which way: an OCI layout buildplane pushes, for a builder on this machine; else `--push`, or one
`docker push`). The mode tag is then added registry-side by `steps/tag.py` while the release runs. A
push the registry broke off (5xx, reset) is tried again, a bounded number of times.
The registry cache export runs inside the build (`export="inline"`) or after it, in the background
(`steps/cache_export.py`).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar
from pathlib import Path

from ..errors import BuildplaneError, Missing
from ..guards import DIGEST
from ..freshness import ImageInputs, changed_files, shown_paths
from ..topology.yaml_lines import expand_env, has_env
from ..state import read_json, write_json_atomic
from ..tools import buildx
from ..tools.registry import HeadInBackground
from ..tools.run import Cancelled, CommandFailed
from ..tools import cache_export
from ..tools import builders
from ..tools.builders import BuilderChoice
from . import push
from .base import RunContext, Status, StepFields, StepResult

if TYPE_CHECKING:
    from .sync import SyncSpec

BUILD_TIMEOUT_S = 3600.0


@dataclass
class BuildFacts:
    image: str
    content_ref: str
    cache_scope: str
    cache: dict
    digest: str | None = None
    inline_cache: bool | None = None
    push: str | None = None  # how the image left the builder: "layout", "buildx" (--push) or "docker-push"
    synced: dict | None = None  # made through the registry, no build: files, deleted, bytes, layer
    # The pushed manifest (bytes, media type), when buildplane pushed it: the tag step puts it under the mode
    # tag without reading it back. Not in to_json: facts become events.
    manifest: tuple[bytes, str] | None = None

    def to_json(self) -> dict:
        out = {"image": self.image, "content_ref": self.content_ref, "cache_scope": self.cache_scope,
               "cache": self.cache}
        if self.digest is not None:
            out["digest"] = self.digest
        if self.inline_cache is not None:
            out["inline_cache"] = self.inline_cache
        if self.push is not None:
            out["push"] = self.push
        if self.synced is not None:
            out["synced"] = self.synced
        return out


@dataclass(frozen=True)
class BuildStep(StepFields):
    kind: ClassVar[str] = "build"
    target: str
    mode: str
    context: Path
    dockerfile: Path
    build_target: str | None
    build_args: dict[str, str]
    platform: str | None
    network: str | None
    repo: str
    tag: str
    content_tag: str
    cache_scope: str
    cache_from: str | None  # the registry ref, when the run imports
    cache_to: str | None  # the registry ref, when the run exports
    metadata_file: Path
    inputs: ImageInputs
    layout: Path | None = None  # where buildx writes the image as an OCI layout, for buildplane to push
    pull: bool = False  # --pull: buildx pulls the bases (their digests were just asked too)
    export: str = "inline"  # the registry cache export: "inline" (in the build) or "background" (after it)
    provenance: bool | None = None  # False: no attestation manifest (dev: one manifest less to push)
    sync: SyncSpec | None = None  # dev: edits inside these rules reach the image without a build
    rebuild: bool = False  # --rebuild: a synced image is built for real, even when its inputs are unchanged
    builder: BuilderChoice = BuilderChoice()  # where it builds: every buildx call and push goes there

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def content_ref(self) -> str:
        return f"{self.repo}:{self.content_tag}"

    # -- argv ---------------------------------------------------------------------------------
    def cache_from_arg(self, inline_from: str | None = None) -> str | None:
        """Registry cache import; with inline cache, the image it travels in (the last one pushed)."""
        if not self.cache_from:
            return None
        return f"type=registry,ref={inline_from or self.cache_from}"

    def cache_to_arg(self, inline: bool = False) -> str | None:
        if not self.cache_to:
            return None
        return "type=inline" if inline else f"type=registry,ref={self.cache_to},mode=max"

    def push_way(self, info) -> str:
        """How this image leaves the builder (`BuilderInfo.push`), but never as a layout when that would
        hold more than one image manifest: several platforms, or an attestation beside the image."""
        way = info.push
        if way == "layout" and (self.layout is None or self.provenance is not False
                                or (self.platform and "," in self.platform)):
            return replace(info, local=False).push
        return way

    @property
    def exports_in_background(self) -> bool:
        return bool(self.cache_to) and self.export == "background"

    @property
    def base_contexts(self) -> dict[str, str]:
        """Each external FROM pinned to the digest the inputs hold for it (`--build-context NAME=docker-image://
        NAME@DIGEST`): the image built is the one the inputs digest names, even if the tag moves meanwhile,
        and BuildKit reads its config from its own store instead of asking the registry (a round trip
        or two, on every build)."""
        out = {}
        for key, digest in self.inputs.files.items():
            image = key[len("<FROM "):-1] if key.startswith("<FROM ") and key.endswith(">") else None
            if image and "@" not in image and DIGEST.match(str(digest)):
                out[image] = f"docker-image://{image}@{digest}"
        return out

    def _head(self, provenance: bool | None) -> list[str]:
        argv = [*self.builder.buildx("build"), "--progress", "plain"]
        for k, v in self.build_args.items():
            # A value from ${VAR} goes through buildx's environment (`--build-arg NAME`): never in argv or `ps`.
            argv += ["--build-arg", k if has_env(v) else f"{k}={v}"]
        for name, source in self.base_contexts.items():
            argv += ["--build-context", f"{name}={source}"]
        if provenance is False:
            argv.append("--provenance=false")
        return argv

    def _tail(self) -> list[str]:
        argv = []
        if self.platform:
            argv += ["--platform", self.platform]
        if self.network:
            argv += ["--network", self.network]
        return argv

    def argv(self, inline_cache: bool = False, inline_from: str | None = None, push: str = "buildx") -> list[str]:
        """`docker buildx build …` in the same order python-on-whales writes it (tested for parity)."""
        argv = self._head(self.provenance)
        if self.pull:
            argv.append("--pull")
        if push == "layout":
            argv += ["--output", f"type=oci,dest={self.layout},tar=false"]
        else:
            argv.append("--push" if push == "buildx" else "--load")  # docker-push: into the image store first
        argv += ["--metadata-file", str(self.metadata_file), "--file", str(self.dockerfile)]
        if self.build_target:
            argv += ["--target", self.build_target]
        cf = self.cache_from_arg(inline_from if inline_cache else None)
        if inline_cache and not inline_from:
            cf = None  # inline cache with no earlier image: nothing to import
        ct = self.cache_to_arg(inline_cache) if inline_cache or not self.exports_in_background else None
        if cf:
            argv += ["--cache-from", cf]
        if ct:
            argv += ["--cache-to", ct]
        # One tag leaves the builder; the content tag goes, so a run cut short after the push is still fresh.
        argv += [*self._tail(), "--tag", self.content_ref, str(self.context)]
        return argv

    def export_argv(self) -> list[str]:
        """The background cache export: the same build (all of it in the builder's cache by now), with
        only the registry cache as output — no image, no import, no attestation."""
        argv = self._head(False) + ["--file", str(self.dockerfile)]
        if self.build_target:
            argv += ["--target", self.build_target]
        argv += ["--cache-to", self.cache_to_arg(), "--output", "type=cacheonly"]
        return argv + self._tail() + [str(self.context)]

    def build_env(self) -> dict[str, str] | None:
        """The environment buildx gets: ours, plus each ${VAR} build arg under its own name."""
        secret = {k: expand_env(v) for k, v in self.build_args.items() if has_env(v)}
        return {**os.environ, **secret} if secret else None

    def describe(self) -> dict:
        out = {"argv": self.argv(), "cache_scope": self.cache_scope, "inputs_digest": self.inputs.digest,
               "fresh_check": f"this machine's record of {self.content_ref}, else HEAD it in the final registry; "
                              "build and push only if missing",
               "image": self.ref,
               "tag": f"{self.ref}: added registry-side, a manifest copy of {self.content_ref} (no second push)",
               "push": "once, under the content tag: an OCI layout buildplane pushes (a builder on this machine; "
                       "--output type=oci instead of --push), else buildx --push, or --load + docker push where "
                       "buildx pushes every tag twice (< 0.21, docker driver)"}
        if self.exports_in_background:
            out["cache_export"] = {"when": "background, after the release", "argv": self.export_argv()}
        if self.sync is not None:
            out["sync"] = self.sync.describe()
        return out

    # -- run ----------------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> StepResult:
        started = time.monotonic()
        record = read_json(ctx.state.build_record(self.mode, self.target))
        facts = BuildFacts(self.ref, self.content_ref, self.cache_scope,
                           {"import": bool(self.cache_from), "export": bool(self.cache_to),
                            "cached_steps": 0, "total_steps": 0})
        rebuild_synced = self._rebuild_synced(record)
        if not self._has_work(record, ctx.force):  # the no-op path: what this machine pushed, no round trip
            facts.digest = record["digest"]
            return StepResult("build", self.target, Status.FRESH, f"fresh: image for inputs digest "
                              f"{self.content_tag} pushed as {self.tag} by an earlier run",
                              time.monotonic() - started, facts)
        if self.sync is not None and not ctx.force:
            synced = self._sync(ctx, record, facts, started)
            if synced is not None:
                return synced
        reason = "--rebuild: the last image was synced, not built" if rebuild_synced else self.why(record, ctx.force)
        # In the edit loop (this machine built the target's last inputs) the registry is asked whether the
        # image exists *while* the build starts: a round trip off the critical path; found (someone built
        # these very inputs), or the question failed, stops the build. Otherwise it is asked first.
        in_edit_loop = bool(record and record.get("digest"))
        if not ctx.force and not in_edit_loop:
            digest = ctx.registry.manifest_digest(self.content_ref, push=True)
            if digest:
                return self.fresh_elsewhere(ctx, record, facts, digest, started)
        head = HeadInBackground(ctx.registry, self.content_ref) if not ctx.force and in_edit_loop else None
        if self.cache_to:  # this build exports the cache again: an export still running for it is obsolete
            cache_export.supersede(ctx.state, self.mode, self.target, ctx.log)
        inline = bool(self.cache_from or self.cache_to) and not self._registry_cache_ok(ctx)
        facts.push = self.push_way(ctx.builder.info())
        # Inline cache travels in the image: import it from the last image this mode pushed.
        argv = self.argv(inline_cache=inline, inline_from=(record or {}).get("ref"), push=facts.push)
        sessions = push.open_sessions(self, ctx) if facts.push == "layout" else None
        try:
            with ctx.builder.slot(lambda: ctx.log(f"{self.target}: waiting for a free slot on "
                                                  f"{self.builder.label} (max_parallel)")):
                lines = self._build_and_push(ctx, argv, reason, head.found if head else None)
                if facts.push == "docker-push":
                    facts.digest = push.docker_push(self, ctx, head.found if head else None)
            if facts.push == "buildx":
                facts.digest = buildx.read_metadata_digest(self.metadata_file)
            elif facts.push == "layout":
                facts.digest, facts.manifest = push.push_layout(self, ctx, sessions)
        except Cancelled:
            digest = head.result()  # raises the question's own error (401, registry down)
            ctx.log(f"{self.target}: build stopped: the final registry already has {self.content_ref}")
            return self.fresh_elsewhere(ctx, record, facts, digest, started)
        finally:
            if sessions is not None:
                sessions.close()  # the ones no blob took (the build failed, or fewer blobs were new)
        if head is not None:
            head.result()
        progress = buildx.parse_progress(lines)
        # The mode tag is added registry-side by the tag step, while the release runs.
        facts.cache.update(cached_steps=progress.cached_steps, total_steps=progress.total_steps)
        facts.inline_cache = inline
        self._save(ctx, facts.digest, facts.cache)
        return StepResult("build", self.target, Status.SUCCEEDED, reason, time.monotonic() - started, facts)

    def _sync(self, ctx: RunContext, record: dict | None, facts: BuildFacts, started: float) -> StepResult | None:
        """The next image without the builder (steps/sync.py), or None: then the build."""
        from . import sync  # tar, gzip and the registry's write side: only for a target with sync rules
        return sync.attempt(self, ctx, record, facts, started)

    def fresh_elsewhere(self, ctx: RunContext, record: dict | None, facts: BuildFacts, digest: str,
                         started: float) -> StepResult:
        """The image for these inputs was pushed by another machine (or run): tag it, record it."""
        if ctx.registry.manifest_digest(self.ref) != digest:  # the mode tag may carry the commit
            ctx.registry.copy_tag(self.content_ref, self.tag)
        self._save(ctx, digest, (record or {}).get("cache") if self.same_inputs(record) else None, tagged=True)
        facts.digest = digest
        return StepResult("build", self.target, Status.FRESH, f"fresh: image for inputs digest "
                          f"{self.content_tag} already in the final registry", time.monotonic() - started, facts)

    def same_inputs(self, record: dict | None) -> bool:
        return bool(record) and record.get("inputs_digest") == self.inputs.digest

    def talks_to_registry(self, state, force: bool) -> bool:
        """Whether this run of the step will call the registry (anything but the no-op path)."""
        return self._has_work(read_json(state.build_record(self.mode, self.target)), force)

    def _has_work(self, record: dict | None, force: bool) -> bool:
        return force or self._rebuild_synced(record) or not self._recorded(record)

    def _rebuild_synced(self, record: dict | None) -> bool:
        """--rebuild over an image that was synced: built for real, even with its inputs unchanged."""
        return self.rebuild and bool(record and record.get("synced"))

    def _recorded(self, record: dict | None) -> bool:
        """This machine pushed these inputs' image and tagged it with this very mode tag."""
        return (self.same_inputs(record) and bool(record.get("tagged")) and record.get("ref") == self.ref
                and record.get("content_ref") == self.content_ref
                and bool(DIGEST.match(str(record.get("digest")))))

    def _registry_cache_ok(self, ctx: RunContext) -> bool:
        ok, who = ctx.builder.registry_cache()
        if not ok:
            ctx.log(f"note: {who} cannot export registry cache; falling back to inline cache "
                    "(enable the containerd image store or use a docker-container builder)")
        return ok

    def why(self, record: dict | None, force: bool) -> str:
        """A sentence saying why this target is being built."""
        if force:
            return "--force"
        if record is None or not record.get("files"):
            return f"no image for inputs digest {self.content_tag}"
        changed = changed_files(record["files"], self.inputs.files, limit=4)
        if not changed:
            return f"no image for inputs digest {self.content_tag} in the final registry"
        rel = shown_paths(self.context, changed[:3])
        more = " and more" if len(changed) > 3 else ""
        return f"{', '.join(rel)}{more} changed"

    def _build_and_push(self, ctx: RunContext, argv: list[str], reason: str, cancel=None) -> list[str]:
        """Run the build; a push the registry broke off (5xx, reset) is tried again, a bounded number of times."""
        self.metadata_file.parent.mkdir(parents=True, exist_ok=True)
        self.metadata_file.unlink(missing_ok=True)
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            if ctx.progress:
                ctx.progress(self.target, line)

        ctx.log(f"{self.target}: building ({reason})")
        try:
            argv = buildx.direct(argv, ctx.runner.which("docker"))
        except BuildplaneError:
            pass  # docker missing: the run below says so, with how to install it
        delay = push.BACKOFF_S
        for attempt in range(1, push.ATTEMPTS + 1):
            start = len(lines)
            try:
                ctx.runner.run(argv, timeout=BUILD_TIMEOUT_S, on_line=on_line, env=self.build_env(), cancel=cancel)
                return lines
            except CommandFailed as exc:
                fault = buildx.push_failure(lines[start:] or exc.stderr_tail.splitlines())
                gone = builders.unreachable(lines[start:] or exc.stderr_tail.splitlines())
                if gone:  # the builder itself is not there (went down since it was checked): exit 4
                    raise Missing(f"{self.builder.label} does not answer: {gone}; check it with "
                                  f"`{' '.join(self.builder.inspect_argv())}`") from None
                if fault is None:
                    raise
                push.failed(self, ctx, attempt, fault, delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _save(self, ctx: RunContext, digest: str | None, cache: dict | None = None, tagged: bool = False) -> None:
        write_json_atomic(ctx.state.build_record(self.mode, self.target), {
            "inputs_digest": self.inputs.digest, "files": self.inputs.files, "digest": digest, "ref": self.ref,
            "content_ref": self.content_ref, "cache": cache, "tagged": tagged, "at": time.time(),
            "spec": self.inputs.spec,
        })
