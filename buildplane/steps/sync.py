"""Sync: the next dev image made through the registry API, without the builder.

When every input that changed since the target's last *built* image lies inside its sync rules
(edits, new files, deletions), the next image is that built image plus one layer holding exactly
those files (deletions as whiteouts): its manifest and config are read (and kept by digest under the
state dir), the layer and a new config (diff_ids and history appended) are uploaded, and a new
manifest is stored under the mode tag. The release then rolls the pods to it through Helm, as after
a build. Anything outside the rules (the Dockerfile, a build arg, a base image, a file no rule
covers) takes the normal build; so does `--rebuild` or `--force`.

The layer is always relative to the last built image, so a series of edits never stacks layers:
each sync carries every file changed since that build. A synced image is dev's alone: it never gets
the content tag (`bp-…`), so no other mode or machine can take it for a built image.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Missing
from ..topology.sync_rules import SyncTarget
from ..tools.registry import Ref
from ..tools.registry_parts import in_parallel
from ..state import keep_file, packed, unpacked, write_json_atomic
from .base import Status, StepResult

if TYPE_CHECKING:
    from ..tools.oci_layer import Entry, Layer

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
BASE_KEYS = ("inputs_digest", "files", "digest", "content_ref", "spec")


# A sync carries every file changed since the last build, again on each later sync; a build makes them part
# of the image, so the syncs after it are small. Measured on the lab (bench figures in the README): the first
# sync of a large change beats the build, but the build pays back within one or two more edits once the
# change passes ~16 MiB, so past that the build is taken. BUILDPLANE_SYNC_MAX_BYTES changes it.
SYNC_MAX_BYTES = 16 << 20


class NotSyncable(Exception):
    """Why this change takes the build instead (said in the run's log)."""


@dataclass(frozen=True)
class SyncSpec:
    """A target's resolved sync rules (dev mode only), and where its context is."""

    rules: tuple[SyncTarget, ...]
    context: Path

    def describe(self) -> dict:
        return {"rules": [f"{self.context / r.src if r.src else self.context} → {r.dest} (COPY at Dockerfile line "
                          f"{r.line})" for r in self.rules],
                "when": "every change since the last built image lies inside these rules",
                "how": "one layer through the registry API, no build; --rebuild builds"}

    def rule_for(self, rel: str) -> SyncTarget | None:
        """The most specific rule covering a context path."""
        found = [r for r in self.rules if r.covers(rel)]
        return max(found, key=lambda r: len(r.src)) if found else None


def base_of(record: dict | None) -> dict | None:
    """The last *built* image of a build record: its own entry when the record is of a sync."""
    if not record:
        return None
    base = record.get("built") if record.get("synced") else record
    if not isinstance(base, dict) or not all(base.get(k) for k in BASE_KEYS):
        return None
    return base


def _owner(chown: str | None) -> tuple[int, int]:
    """--chown as numbers; a name would need the image's /etc/passwd, so it takes the build."""
    if not chown:
        return 0, 0
    user, _, group = chown.partition(":")
    if not user.isdigit() or (group and not group.isdigit()):
        raise NotSyncable(f"COPY --chown={chown} names a user or group; sync needs numeric ids")
    return int(user), int(group or user)


def entries(spec: SyncSpec, base_files: dict[str, str], files: dict[str, str]) -> list[Entry]:
    """The layer that turns the built image into one with today's files (none: they are the built image's
    again); NotSyncable when a change lies outside the rules (or is not a file: the Dockerfile, a base image)."""
    from ..tools.oci_layer import Entry  # tarfile and gzip: only when something is synced

    changed = sorted(p for p in set(base_files) | set(files) if base_files.get(p) != files.get(p))
    rules: dict[str, SyncTarget] = {}
    for rel in changed:
        rule = None if rel.startswith("<") else spec.rule_for(rel)
        if rule is None:
            shown = "the Dockerfile" if rel == "<Dockerfile>" else "a base image" if rel.startswith("<FROM") else \
                str(spec.context / rel)
            raise NotSyncable(f"{shown} changed, outside the sync rules")
        rules[rel] = rule
    base_dirs = {posixpath.dirname(p) for p in base_files}
    base_dirs |= {d for p in base_dirs for d in _ancestors(p)}
    # Keyed by (path, kind): a path that turned from a file into a directory (or back) is a whiteout of the
    # old and an entry of the new at one path; whiteouts go first in the layer (tools/oci_layer.py).
    out: dict[tuple[str, str], Entry] = {}
    for rel in changed:
        rule = rules[rel]
        uid, gid = _owner(rule.chown)
        chmod = int(rule.chmod, 8) if rule.chmod and rule.chmod.isdigit() else None
        if rel not in files:
            # Exactly the path the context lost, as a build would leave the tree: a directory it empties keeps
            # what the base image or a RUN put there. Only where a file now stands in place of one of its
            # directories is that directory whited out, whole, as the build replaces it.
            gone = next((d for d in reversed(_ancestors(rel)) if d in files and rule.covers(d)), rel)
            path = rule.image_path(gone)
            out[(path, "whiteout")] = Entry(path, "whiteout")  # no time of its own: same edit, same layer
            continue
        st = os.lstat(spec.context / rel)
        path = rule.image_path(rel)
        if stat.S_ISLNK(st.st_mode):
            out[(path, "new")] = Entry(path, "link", link=os.readlink(spec.context / rel), mode=0o777,
                                       mtime=int(st.st_mtime), uid=uid, gid=gid)
        else:
            out[(path, "new")] = Entry(path, "file", source=str(spec.context / rel),
                                       mode=chmod or (st.st_mode & 0o7777), mtime=int(st.st_mtime), uid=uid, gid=gid)
        parent = posixpath.dirname(rel)
        for d in [parent, *_ancestors(parent)]:  # directories no built image had: made as COPY makes them
            if d and (d not in base_dirs or d in base_files) and d != rule.src and rule.covers(d):
                out.setdefault((rule.image_path(d), "new"), Entry(rule.image_path(d), "dir", mode=chmod or 0o755,
                                                                  mtime=int(st.st_mtime), uid=uid, gid=gid))
    return list(out.values())


def _ancestors(d: str) -> list[str]:
    out = []
    while d:
        d = posixpath.dirname(d)
        if d:
            out.append(d)
    return out


# ---- the registry side ------------------------------------------------------------------------

def _kept(ctx, host: str, repo: str, digest: str, fetch) -> bytes:
    """A manifest or blob by digest, from the state dir when an earlier sync read it (content-addressed)."""
    path = ctx.state.root / "oci" / digest.replace(":", "-")
    try:
        kept = path.read_bytes()
        if "sha256:" + hashlib.sha256(kept).hexdigest() == digest:
            return kept
        path.unlink(missing_ok=True)  # not what its name says (an older run kept a bad answer): read again
    except OSError:
        pass
    data = fetch(host, repo, digest)  # verified against the digest by the registry client
    keep_file(path, data)
    return data


def _image(ctx, host: str, repo: str, digest: str, platform: str | None) -> tuple[dict, str]:
    """The built image's manifest (a platform's, from an index) and its media type."""
    raw = _kept(ctx, host, repo, digest, lambda h, r, d: _manifest_bytes(ctx, h, r, d))
    manifest = json.loads(raw)
    media = manifest.get("mediaType") or OCI_MANIFEST
    if media in INDEX_TYPES or "manifests" in manifest:
        images = [m for m in manifest.get("manifests", [])
                  if (m.get("platform") or {}).get("os") not in (None, "unknown")
                  and (m.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"]
        if platform:
            want = platform.split("/")
            images = [m for m in images if [m["platform"].get("os"), m["platform"].get("architecture")] == want[:2]]
        if len(images) != 1:
            raise NotSyncable(f"the built image is an index of {len(images)} platform images; sync makes one")
        return _image(ctx, host, repo, images[0]["digest"], platform)
    return manifest, media


def _manifest_bytes(ctx, host: str, repo: str, digest: str) -> bytes:
    body, _ = ctx.registry.manifest(host, repo, digest)
    return body


def next_image(ctx, content_ref: str, tag: str, base_digest: str, platform: str | None,
               layer_entries: list[Entry]) -> tuple[str, Layer]:
    """Store `base_digest` + one layer of `layer_entries` under `tag`; (its digest, the layer)."""
    ref = Ref.parse(content_ref)
    try:
        manifest, media = _image(ctx, ref.host, ref.repo, base_digest, platform)
        config = json.loads(_kept(ctx, ref.host, ref.repo, manifest["config"]["digest"], ctx.registry.blob))
    except Missing as exc:
        raise NotSyncable(f"the last built image {base_digest[:19]} cannot be read ({exc.message})") from None
    from ..tools.oci_layer import make_layer

    layer = make_layer(layer_entries, spool_dir=ctx.state.root / "spool")
    try:
        return _store(ctx, ref, tag, manifest, media, config, layer), layer
    finally:
        layer.discard()


def _store(ctx, ref: Ref, tag: str, manifest: dict, media: str, config: dict, layer: Layer) -> str:
    """Upload the layer (streamed from its spool file) and the new config, then put the new manifest."""
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(layer.diff_id)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config["created"] = now
    config.setdefault("history", []).append({
        "created": now, "created_by": f"buildplane sync: {layer.files} files, {layer.deleted} deleted",
        "comment": "buildplane sync"})
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    # The layer and the config at once: two upload sessions in flight, one round trip's wait.
    in_parallel([lambda: ctx.registry.push_blob(ref.host, ref.repo, layer.path, layer.digest),
                 lambda: ctx.registry.push_blob(ref.host, ref.repo, config_bytes, config_digest)])
    layer_type = OCI_LAYER if media == OCI_MANIFEST else DOCKER_LAYER
    new = {**manifest, "config": {**manifest["config"], "digest": config_digest, "size": len(config_bytes)},
           "layers": [*manifest.get("layers", []),
                      {"mediaType": layer_type, "digest": layer.digest, "size": layer.blob_size}]}
    body = json.dumps(new, separators=(",", ":")).encode()
    return ctx.registry.put_manifest(ref.host, ref.repo, tag, body, media)


def attempt(step, ctx, record: dict | None, facts, started: float):
    """The next image as the last built one plus a layer of the changed files, or None: then the build,
    with the reason in the log when the change was not the rules' to take. `step` is the BuildStep."""
    base = base_of(record)
    if base is None:
        return None
    if base["inputs_digest"] == step.inputs.digest and base["content_ref"] == step.content_ref:
        # Back to the very files of the last build: its image is in the registry (this machine pushed it).
        return step.fresh_elsewhere(ctx, record, facts, base["digest"], started)
    same_repo = bool(record.get("ref")) and str(record["ref"]).rsplit(":", 1)[0] == step.repo
    if record.get("synced") and step.same_inputs(record) and record.get("ref") != step.ref and same_repo:
        # The synced image of these very inputs, under a mode tag that moved (a commit): tag it, no upload.
        facts.digest = ctx.registry.copy_tag(record["ref"], step.tag) or record["digest"]
        write_json_atomic(ctx.state.build_record(step.mode, step.target), {**record, "ref": step.ref})
        return StepResult("build", step.target, Status.FRESH, f"fresh: the synced image of these inputs, "
                          f"tagged {step.tag} registry-side", time.monotonic() - started, facts)
    try:
        if base["spec"] != step.inputs.spec:
            raise NotSyncable("the Dockerfile, a build arg, the build target or a base image changed")
        if Ref.parse(base["content_ref"]).repo != Ref.parse(step.content_ref).repo:
            raise NotSyncable("the image's repository changed")
        layer_entries = entries(step.sync, unpacked(base["files"]) or {}, step.inputs.files)
        if not layer_entries:
            return None  # the built image's inputs again: the registry has it under its content tag
        carried = sum(os.stat(e.source).st_size for e in layer_entries if e.kind == "file" and e.source)
        limit = int(os.environ.get("BUILDPLANE_SYNC_MAX_BYTES") or SYNC_MAX_BYTES)
        if carried > limit:
            raise NotSyncable(f"{carried / 1e6:.0f} MB changed since the last build (over {limit / 1e6:.0f} MB): a "
                              "build makes it part of the image, so the next syncs stay small")
        ctx.log(f"{step.target}: syncing ({step.why(base, False)}) into {step.ref}")
        digest, layer = next_image(ctx, step.content_ref, step.tag, base["digest"], step.platform, layer_entries)
    except NotSyncable as why:
        ctx.log(f"{step.target}: building, not syncing: {why}")
        return None
    save_record(ctx, step, base, digest, layer)
    facts.digest = digest
    facts.cache.update({"import": False, "export": False})  # no builder: nothing imported or exported
    facts.synced = {"files": layer.files, "deleted": layer.deleted, "bytes": layer.size, "layer": layer.digest,
                    "base": base["digest"]}
    return StepResult("build", step.target, Status.SUCCEEDED,
                      f"synced {layer.files} file(s), {layer.deleted} deleted, {layer.size} bytes onto the built "
                      f"image {base['digest'][:19]}: no build", time.monotonic() - started, facts)


def save_record(ctx, step, base: dict, digest: str, layer: Layer) -> None:
    """The build record of a synced image: today's inputs, the synced digest, and the built image it is on."""
    write_json_atomic(ctx.state.build_record(step.mode, step.target), {
        "inputs_digest": step.inputs.digest, "files": packed(step.inputs.files), "digest": digest, "ref": step.ref,
        "content_ref": step.content_ref, "cache": None, "tagged": True, "at": time.time(),
        "synced": {"files": layer.files, "deleted": layer.deleted, "bytes": layer.size, "layer": layer.digest},
        "built": {**{k: base.get(k) for k in BASE_KEYS},
                  "files": base["files"] if isinstance(base["files"], str) else packed(base["files"])},
    })
