"""Input digests (DESIGN §6): what an image and a release are built from, hashed cheaply.

A stat cache (path, size, mtime, inode → file hash) keeps a no-change check on a large
tree to one stat per file; only files whose stat changed are read again.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .. import contract
from .bases import BaseDigests
from .dockerignore import DockerIgnore
from ..errors import StepFailed
from ..state import write_json_atomic
from ..topology.yaml_lines import expand_env
from ..topology import Topology


@dataclass
class StatCache:
    """path → (size, mtime_ns, inode, mode, sha256) persisted as one JSON file."""

    path: Path
    entries: dict[str, list] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def open(cls, path: Path) -> "StatCache":
        try:
            entries = json.loads(path.read_text())
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError):
            entries = {}
        return cls(path=path, entries=entries)

    def file_hash(self, abspath: str, st: os.stat_result) -> str:
        key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)
        hit = self.entries.get(abspath)
        if hit is not None and tuple(hit[:4]) == key:
            return hit[4]
        h = hashlib.sha256()
        with open(abspath, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        self.entries[abspath] = [*key, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            write_json_atomic(self.path, self.entries)  # concurrent runs never read a torn file
        except (OSError, StepFailed):
            pass  # a cache: an unwritable (or full) state dir only costs the next run some hashing
        self.dirty = False


@dataclass(frozen=True)
class ImageInputs:
    """What an image is built from: its digest, and the per-file hashes (for 'what changed')."""

    digest: str
    files: dict[str, str]
    spec: str = ""  # digest of everything but the context's files (Dockerfile, args, target, platform, bases)
    bases: dict[str, str] = field(default_factory=dict)  # each external FROM → the digest it resolved to


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
) -> ImageInputs:
    """The image inputs digest: context after .dockerignore, Dockerfile, args, target, platform, and
    whether the build attests (an attested image is another manifest: staging's is never dev's)."""
    ignore = DockerIgnore.for_context(context, dockerfile)
    files: dict[str, str] = {}
    for rel, abspath, st in walk_context(context, ignore):
        try:
            if stat.S_ISLNK(st.st_mode):
                files[rel] = "link:" + os.readlink(abspath)
            elif stat.S_ISREG(st.st_mode):
                exec_bit = "x" if st.st_mode & 0o111 else "-"
                files[rel] = exec_bit + cache.file_hash(abspath, st)
        except FileNotFoundError:
            continue  # gone while we looked (an editor's temp file): the builder will not see it either
    df_hash = cache.file_hash(str(dockerfile.resolve()), dockerfile.stat())
    h = hashlib.sha256()
    h.update(b"buildplane-image-inputs-v1\0")
    fields = {"dockerfile": df_hash, "args": sorted(build_args.items()), "target": build_target,
              "platform": platform, "bases": sorted((bases or {}).items())}
    if attested:  # only then, so an image without attestation keeps the digest it always had
        fields["attested"] = True
    spec = json.dumps(fields, sort_keys=True).encode()
    h.update(spec)
    for rel in sorted(files):
        # A name is hashed as the bytes it has on disk: a non-UTF-8 name (surrogate-escaped here) is one too.
        # encode() first: fsencode is the slow path, taken only by the names that need it.
        line = f"{rel}\0{files[rel]}\n"
        try:
            h.update(line.encode())
        except UnicodeEncodeError:
            h.update(os.fsencode(line))
    files["<Dockerfile>"] = df_hash
    return ImageInputs(digest="sha256:" + h.hexdigest(), files=files, spec="sha256:" + hashlib.sha256(spec).hexdigest(),
                       bases=dict(bases or {}))


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
                  pull: bool = False, provenance: bool | None = False):
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
        images = bases.bases_of(cache.file_hash(str(dockerfile.resolve()), dockerfile.stat()), expanded,
                                lambda: dockerfile.read_text(encoding="utf-8", errors="replace"))
        resolved = bases.resolve(images, pull=pull)
    inputs = image_inputs(context, dockerfile, build_args=expanded, build_target=t.build_target,
                          platform=t.platform, cache=cache, bases=resolved, attested=provenance is not False)
    inputs.files.update({f"<FROM {image}>": digest for image, digest in (resolved or {}).items()})
    return context, dockerfile, args, inputs


def release_files(chart: Path, values: tuple[Path, ...], cache: StatCache) -> tuple[dict[str, str], dict[str, str]]:
    """(chart file hashes, values file hashes): what a release is made of besides the image."""
    return tree_hashes(chart, cache), {str(v): cache.file_hash(str(v), v.stat()) for v in values}
