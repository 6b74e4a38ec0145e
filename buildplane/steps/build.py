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

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar
from pathlib import Path

from ..errors import BuildplaneError, Missing
from ..guards import DIGEST
from ..freshness import ImageInputs, StatCache, changed_files, shown_paths
from ..state import packed, read_json, unpacked, write_json_atomic
from ..tools import buildx
from ..tools.registry import HeadInBackground
from ..tools.run import Cancelled, CommandFailed
from ..tools import cache_export
from ..tools import builders
from ..tools.builders import BuilderChoice
from ..topology.sync_hint import MANY_FILES
from . import push
from .build_argv import BuildxArgv, largest_layer
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
class BuildStep(StepFields, BuildxArgv):
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
    insecure: tuple[str, ...] = ()  # plain-HTTP registries off loopback (topology plain_http): said to BuildKit
    tokens: tuple[tuple[str, str, str], ...] = ()  # (host, username, token variable): registries.auth

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def content_ref(self) -> str:
        return f"{self.repo}:{self.content_tag}"

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
        if self.sync is None and self.mode == "dev" and len(self.inputs.files) > MANY_FILES:
            self._hint_sync(ctx)
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
            cache_export.supersede(ctx.state, self.mode, self.target, ctx.log, wait=not self.exports_in_background)
        inline = bool(self.cache_from or self.cache_to) and not self._registry_cache_ok(ctx)
        facts.push = self.push_way(ctx.builder.info(), record)
        # Inline cache travels in the image: import it from the last image this mode pushed.
        argv = self.argv(inline_cache=inline, inline_from=(record or {}).get("ref"), push=facts.push)
        sessions = push.open_sessions(self, ctx) if facts.push == "layout" else None
        if facts.push == "layout":
            push.begin_layout(self, ctx)
        try:
            lines = self._build_in_slot(ctx, argv, reason, facts, head)
            moved = self._moved(ctx)
            # The tree moved while the builder read it: what was built is not these inputs' image, so it never
            # goes out under their content tag (the layout way) nor into the record; the next run builds again.
            own_tag = self.tag if moved and facts.push == "layout" else None
            if facts.push == "buildx":
                facts.digest = buildx.read_metadata_digest(self.metadata_file)
            elif facts.push == "layout":
                from ..tools.layout_push import LayoutDamaged, wipe  # the build path's alone, not the no-op's
                try:
                    facts.digest, facts.manifest = push.push_layout(self, ctx, sessions, own_tag)
                except LayoutDamaged as exc:  # never pushed: the image is written into a new layout
                    ctx.log(f"{self.target}: {exc}; building it into a new layout")
                    wipe(self.layout)
                    push.begin_layout(self, ctx)
                    lines = self._build_in_slot(ctx, argv, reason, facts, head)
                    facts.digest, facts.manifest = push.push_layout(self, ctx, None, own_tag)
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
        if moved:
            shown = ", ".join(shown_paths(self.context, moved[:3]))
            ctx.log(f"{self.target}: {shown} changed while the builder read the context: released, but not recorded "
                    f"as the image of inputs {self.content_tag}; the next run builds the tree as it is now")
            return StepResult("build", self.target, Status.SUCCEEDED, f"{reason}; {shown} changed during the build",
                              time.monotonic() - started, facts)
        self._save(ctx, facts.digest, facts.cache,
                   largest=largest_layer(facts.manifest) or (record or {}).get("largest_layer"))
        return StepResult("build", self.target, Status.SUCCEEDED, reason, time.monotonic() - started, facts)

    def _hint_sync(self, ctx: RunContext) -> None:
        """A COPY of thousands of files and no sync rule: say once which rule would spare those builds."""
        from ..topology import sync_hint
        from ..topology.yaml_lines import expand_env  # the build args as the builder gets them
        found = sync_hint.suggest(self.context, self.dockerfile, self.build_target,
                                  {k: expand_env(v) for k, v in self.build_args.items()}, self.inputs.files)
        sync_hint.say_once(ctx.state.root, self.mode, self.target, self.dockerfile, found, ctx.log)

    def _moved(self, ctx: RunContext) -> list[str]:
        """Context files that changed since the plan hashed them (an editor saving during the build)."""
        from ..freshness.digests import moved_files
        cache = StatCache.open(ctx.state.statcache)
        try:
            return moved_files(self.inputs, self.context, self.dockerfile, cache)
        finally:
            cache.save()

    def _build_in_slot(self, ctx: RunContext, argv: list[str], reason: str, facts: BuildFacts,
                       head: HeadInBackground | None) -> list[str]:
        """The build (and a `docker push`) once the builder has a free slot; its progress lines."""
        with ctx.builder.slot(lambda: ctx.log(f"{self.target}: waiting for a free slot on "
                                              f"{self.builder.label} (max_parallel)")):
            try:
                lines = self._build_and_push(ctx, argv, reason, head.found if head else None)
            except BaseException:
                if facts.push == "layout":
                    push.end_layout_after_failure(self)
                raise
            if facts.push == "docker-push":
                facts.digest = push.docker_push(self, ctx, head.found if head else None)
        return lines

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
        before = unpacked(record.get("files")) if record else None
        if not before:
            return f"no image for inputs digest {self.content_tag}"
        changed = changed_files(before, self.inputs.files, limit=4)
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
                ctx.runner.run(argv, timeout=BUILD_TIMEOUT_S, on_line=on_line, env=self.build_env(ctx.state.root), cancel=cancel)
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

    def _save(self, ctx: RunContext, digest: str | None, cache: dict | None = None, tagged: bool = False,
              largest: int | None = None) -> None:
        write_json_atomic(ctx.state.build_record(self.mode, self.target), {
            "inputs_digest": self.inputs.digest, "files": packed(self.inputs.files), "digest": digest, "ref": self.ref,
            "content_ref": self.content_ref, "cache": cache, "tagged": tagged, "at": time.time(),
            "spec": self.inputs.spec, "largest_layer": largest,
        })
