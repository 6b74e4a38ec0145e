"""Input digests (DESIGN §6): what an image and a release are built from, hashed cheaply.

A stat cache (path, size, mtime, inode → file hash) keeps a no-change check on a large
tree to one stat per file; only files whose stat changed are read again.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .. import contract
from .bases import BaseDigests
from .dockerignore import DockerIgnore
from .entries import file_entry, sha256_file
from .worktree import TreeMemo
from ..errors import StepFailed
from ..state import write_json_atomic
from ..topology.yaml_lines import expand_env
from ..topology import Topology

SMALL = 1 << 16  # bytes


@dataclass
class StatCache:
    """path → (size, mtime_ns, inode, mode, sha256) persisted as one JSON file, read when first needed
    (a run whose digests the tree memo answers never reads it)."""

    path: Path
    loaded: dict[str, list] | None = None
    dirty: bool = False

    @classmethod
    def open(cls, path: Path) -> "StatCache":
        return cls(path=path)

    @property
    def entries(self) -> dict[str, list]:
        if self.loaded is None:
            try:
                entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                entries = {}
            self.loaded = entries if isinstance(entries, dict) else {}
        return self.loaded

    def file_hash(self, abspath: str, st: os.stat_result) -> str:
        key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)
        hit = self.entries.get(abspath)
        if hit is not None and tuple(hit[:4]) == key:
            return hit[4]
        digest = sha256_file(abspath)
        self.entries[abspath] = [*key, digest]
        self.dirty = True
        return digest

    def small_file_hash(self, path: Path) -> str:
        """A Dockerfile's hash: read whole when small (cheaper than the cache it would load), else cached."""
        st = path.stat()
        if st.st_size > SMALL:
            return self.file_hash(str(path), st)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def save(self) -> None:
        if not self.dirty or self.loaded is None:
            return
        try:
            write_json_atomic(self.path, self.loaded)  # concurrent runs never read a torn file
        except (OSError, StepFailed):
            pass  # a cache: an unwritable (or full) state dir only costs the next run some hashing
        self.dirty = False


@dataclass(frozen=True)
class ImageInputs:
    """What an image is built from: its digest, and the per-file hashes (for 'what changed')."""

    digest: str
    walk: Callable[[], dict[str, str]] = field(repr=False, compare=False)
    spec: str = ""  # digest of everything but the context's files (Dockerfile, args, target, platform, bases)
    bases: dict[str, str] = field(default_factory=dict)  # each external FROM → the digest it resolved to

    @cached_property
    def files(self) -> dict[str, str]:
        """Context path → hash, with `<Dockerfile>` and `<FROM image>` entries: from the walk that made the
        digest, or walked when first asked where the tree memo gave the digest without one."""
        return self.walk()


def walk_context(context: Path, ignore: DockerIgnore):
    """Yield (relpath, abspath, stat) for every regular file/symlink the builder would send."""
    stack = [("", str(context))]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            entries = list(os.scandir(abs_dir))
        except OSError:
            continue
        for entry in entries:
            rel = f"{rel_dir}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                # An excluded directory can still hold a '!'-re-included file: only prune without negations.
                if ignore.excluded(rel) and not ignore.has_negations:
                    continue
                stack.append((rel + "/", entry.path))
                continue
            if ignore.excluded(rel):
                continue
            try:
                yield rel, entry.path, entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue


def image_inputs(
    context: Path,
    dockerfile: Path,
    *,
    build_args: dict[str, str],
    build_target: str | None,
    platform: str | None,
    cache: StatCache,
    bases: dict[str, str] | None = None,
    attested: bool = False,
    memo: TreeMemo | None = None,
) -> ImageInputs:
    """The image inputs digest: context after .dockerignore, Dockerfile, args, target, platform, and
    whether the build attests (an attested image is another manifest: staging's is never dev's)."""
    ignore = DockerIgnore.for_context(context, dockerfile)
    df_hash = cache.small_file_hash(dockerfile.resolve())
    fields = {"dockerfile": df_hash, "args": sorted(build_args.items()), "target": build_target,
              "platform": platform, "bases": sorted((bases or {}).items())}
    if attested:  # only then, so an image without attestation keeps the digest it always had
        fields["attested"] = True
    spec = json.dumps(fields, sort_keys=True).encode()
    spec_digest = "sha256:" + hashlib.sha256(spec).hexdigest()
    extra = {"<Dockerfile>": df_hash, **{f"<FROM {image}>": digest for image, digest in (bases or {}).items()}}
    if memo is not None and sends_git_dir(context, ignore):
        memo = None  # the repository's own files go to the builder, and git reports no change in them
    tree = memo.tree_state(context) if memo is not None else None  # taken before the files are read
    known = memo.lookup(context, tree, spec_digest + ignore.signature) if memo is not None else None
    if known is not None:
        return ImageInputs(digest=known, walk=lambda: {**context_files(context, ignore, cache), **extra},
                           spec=spec_digest, bases=dict(bases or {}))
    patched = memo.patched(context, tree, ignore) if memo is not None else None
    recent: list[str] = []
    files = patched if patched is not None else \
        context_files(context, ignore, cache, tree.written_ns if tree else None, recent)
    digest = inputs_digest(spec, files)
    if memo is not None:
        if patched is None and tree is not None and tree.unlisted_since_written(context, recent):
            # A file git calls clean changed after the index was written (saved during the walk, and perhaps
            # undone): what the walk read may never have stood under this tree's key.
            tree = None
        memo.record(context, tree, spec_digest + ignore.signature, digest, files, ignore)
    files.update(extra)
    return ImageInputs(digest=digest, walk=lambda: files, spec=spec_digest, bases=dict(bases or {}))


def inputs_digest(spec: bytes, files: dict[str, str]) -> str:
    h = hashlib.sha256()
    h.update(b"buildplane-image-inputs-v1\0")
    h.update(spec)
    # A name is hashed as the bytes it has on disk: a non-UTF-8 name (surrogate-escaped here) is one too.
    # One join and one encode: the per-line loop cost as much as the walk's stat calls.
    h.update("".join([f"{rel}\0{files[rel]}\n" for rel in sorted(files)]).encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


def sends_git_dir(context: Path, ignore: DockerIgnore) -> bool:
    return (context / ".git").exists() and (ignore.has_negations or not ignore.excluded(".git"))


def context_files(context: Path, ignore: DockerIgnore, cache: StatCache, since_ns: int | None = None,
                  recent: list[str] | None = None) -> dict[str, str]:
    """Context path → "x"/"-" + sha256 of a file, or "link:" + its target, for what the builder is sent;
    with `since_ns`, the paths changed since then are put in `recent`."""
    files: dict[str, str] = {}
    for rel, abspath, st in walk_context(context, ignore):
        if since_ns is not None and st.st_ctime_ns >= since_ns and recent is not None:
            recent.append(rel)
        try:
            entry = file_entry(abspath, st, cache.file_hash)
        except FileNotFoundError:
            continue  # gone while we looked (an editor's temp file): the builder will not see it either
        if entry is not None:
            files[rel] = entry
    return files


def moved_files(inputs: ImageInputs, context: Path, dockerfile: Path, cache: StatCache) -> list[str]:
    """The context files (and the Dockerfile) that differ now from what `inputs` hashed: an edit saved
    while the builder read the context. Empty when the tree is as hashed (cheap: the stat cache answers)."""
    now = image_inputs(context, dockerfile, build_args={}, build_target=None, platform=None, cache=cache)
    before = {k: v for k, v in inputs.files.items() if not k.startswith("<") or k == "<Dockerfile>"}
    return changed_files(before, now.files, limit=4)


def changed_files(before: dict[str, str], after: dict[str, str], limit: int = 3) -> list[str]:
    """Paths added, removed or edited between two file maps, for 'why did this build'."""
    names = sorted(set(before) | set(after))
    return [n for n in names if before.get(n) != after.get(n)][:limit]


def shown_paths(context: Path, names: list[str]) -> list[str]:
    """Changed input names as people know them: context-relative files, and the Dockerfile."""
    return ["Dockerfile" if n == "<Dockerfile>" else shown_name(str(context / n)) for n in names]


def shown_name(name: str) -> str:
    """A file name fit to print: bytes that are not UTF-8 shown as \\xNN (never a UnicodeEncodeError)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def release_inputs(*, chart_files: dict[str, str], values_files: dict[str, str], image_digest: str,
                   namespace: str, release: str, extra: dict[str, str] | None = None) -> str:
    """The release inputs digest: chart files, values files, image digest, namespace, release name."""
    payload = {"chart": chart_files, "values": values_files, "image": image_digest, "namespace": namespace,
               "release": release, "extra": extra or {}}
    return "sha256:" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def tree_hashes(root: Path, cache: StatCache) -> dict[str, str]:
    """Hashes of every file below root (no ignore rules): for chart directories."""
    return {rel: cache.file_hash(abspath, st) for rel, abspath, st in walk_context(root, DockerIgnore([]))
            if stat.S_ISREG(st.st_mode)}


def target_inputs(topo: Topology, name: str, base: Path, cache: StatCache, bases: BaseDigests | None = None,
                  pull: bool = False, provenance: bool | None = False, memo: TreeMemo | None = None):
    """(context, dockerfile, build args, ImageInputs) of one target as the working tree stands; with
    `bases`, what each external FROM resolves to is an input too (bases.py has the rule)."""
    t = topo.targets[name]
    context = contract.project_path(base, t.context)
    dockerfile = contract.project_path(base, t.dockerfile)
    args = {**contract.base_image_arg(topo), **t.build_args}
    # The inputs hold what the builder gets: ${VAR}s expanded (a changed value is a changed image).
    expanded = {k: expand_env(v) for k, v in args.items()}
    resolved = None
    if bases is not None:
        images = bases.bases_of(cache.small_file_hash(dockerfile.resolve()), expanded,
                                lambda: dockerfile.read_text(encoding="utf-8", errors="replace"))
        resolved = bases.resolve(images, pull=pull)
    inputs = image_inputs(context, dockerfile, build_args=expanded, build_target=t.build_target,
                          platform=t.platform, cache=cache, bases=resolved, attested=provenance is not False,
                          memo=memo)
    return context, dockerfile, args, inputs


def release_files(chart: Path, values: tuple[Path, ...], cache: StatCache) -> tuple[dict[str, str], dict[str, str]]:
    """(chart file hashes, values file hashes): what a release is made of besides the image."""
    return tree_hashes(chart, cache), {str(v): cache.file_hash(str(v), v.stat()) for v in values}
