"""One OCI image layer made from files on disk: a tar of the files at their image paths, deletions as
whiteouts (`.wh.NAME`, the OCI image spec's layer format), gzip-compressed. Pure: no registry, no builder.

The tar is deterministic for the same entries (sorted, gzip without a timestamp), so the same edit
gives the same layer digest.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
import tarfile
from dataclasses import dataclass

WHITEOUT = ".wh."


@dataclass(frozen=True)
class Entry:
    """What the layer holds at one image path: a file (from `source`), a link, a directory, or a deletion."""

    path: str  # absolute image path
    kind: str  # file | link | dir | whiteout
    source: str | None = None  # the file on disk (file)
    link: str | None = None  # the link's target (link)
    mode: int = 0o644
    mtime: int = 0
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Layer:
    blob: bytes  # the gzip stream, as uploaded
    digest: str  # sha256 of the blob
    diff_id: str  # sha256 of the uncompressed tar (the image config's rootfs.diff_ids)
    files: int  # files and links added or changed
    deleted: int  # whiteouts
    size: int  # bytes of file content

    @property
    def blob_size(self) -> int:
        return len(self.blob)


def _member(entry: Entry) -> tuple[tarfile.TarInfo, bytes | None]:
    name = entry.path.lstrip("/")
    if entry.kind == "whiteout":
        parent, base = posixpath.split(name)
        info = tarfile.TarInfo(posixpath.join(parent, WHITEOUT + base))
        info.mode, info.mtime = 0o644, entry.mtime
        return info, b""
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid = entry.mode & 0o7777, entry.mtime, entry.uid, entry.gid
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        return info, None
    if entry.kind == "link":
        info.type, info.linkname = tarfile.SYMTYPE, entry.link or ""
        return info, None
    with open(entry.source, "rb") as fh:
        data = fh.read()
    info.size = len(data)
    return info, data


def _order(e: Entry) -> tuple:
    """Whiteouts first (they hide the lower layers only: a runtime applying this one removes the path, so a
    new entry at it must come after), then directories parents first, then files and links."""
    if e.kind == "whiteout":
        return (0, 0, e.path)
    if e.kind == "dir":
        return (1, e.path.count("/"), e.path)
    return (2, 0, e.path)


def make_layer(entries: list[Entry], level: int = 6) -> Layer:
    """The layer of `entries`, parents before children."""
    raw = io.BytesIO()
    files = deleted = size = 0
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(entries, key=_order):
            info, data = _member(entry)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            if entry.kind == "whiteout":
                deleted += 1
            elif entry.kind != "dir":
                files += 1
                size += info.size
    tar_bytes = raw.getvalue()
    blob = gzip.compress(tar_bytes, compresslevel=level, mtime=0)
    return Layer(blob, "sha256:" + hashlib.sha256(blob).hexdigest(), "sha256:" + hashlib.sha256(tar_bytes).hexdigest(),
                 files, deleted, size)
