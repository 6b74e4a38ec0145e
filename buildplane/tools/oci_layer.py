"""One OCI image layer made from files on disk: a tar of the files at their image paths, deletions as
whiteouts (`.wh.NAME`, the OCI image spec's layer format), gzip-compressed. Pure: no registry, no builder.

The tar is deterministic for the same entries (sorted, gzip without a timestamp), so the same edit
gives the same layer digest. It is streamed: each file is read in pieces into the tar, the tar into gzip,
gzip into a spool file (both hashed on the way), so a layer of large assets costs a buffer's worth of
memory, not the layer twice over; the upload reads the spool file.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

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
    path: Path  # the gzip stream, as uploaded (a spool file: `discard` removes it)
    digest: str  # sha256 of the blob
    diff_id: str  # sha256 of the uncompressed tar (the image config's rootfs.diff_ids)
    files: int  # files and links added or changed
    deleted: int  # whiteouts
    size: int  # bytes of file content
    blob_size: int  # bytes of the gzip stream

    @property
    def blob(self) -> bytes:
        """The whole blob in memory (small layers, tests); the upload streams `path`."""
        return self.path.read_bytes()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _Hashing:
    """A write-only file that hashes what passes through on its way to `out`."""

    def __init__(self, out) -> None:
        self.out, self.hash, self.size = out, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _member(entry: Entry) -> tuple[tarfile.TarInfo, str | None]:
    """The tar header of an entry, and the file its content is read from (streamed by addfile)."""
    name = entry.path.lstrip("/")
    if entry.kind == "whiteout":
        parent, base = posixpath.split(name)
        info = tarfile.TarInfo(posixpath.join(parent, WHITEOUT + base))
        info.mode, info.mtime = 0o644, entry.mtime
        return info, None
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid = entry.mode & 0o7777, entry.mtime, entry.uid, entry.gid
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        return info, None
    if entry.kind == "link":
        info.type, info.linkname = tarfile.SYMTYPE, entry.link or ""
        return info, None
    info.size = os.stat(entry.source).st_size
    return info, entry.source


def _order(e: Entry) -> tuple:
    """Whiteouts first (they hide the lower layers only: a runtime applying this one removes the path, so a
    new entry at it must come after), then directories parents first, then files and links."""
    if e.kind == "whiteout":
        return (0, 0, e.path)
    if e.kind == "dir":
        return (1, e.path.count("/"), e.path)
    return (2, 0, e.path)


def make_layer(entries: list[Entry], level: int = 6, spool_dir: Path | None = None) -> Layer:
    """The layer of `entries`, parents before children, spooled to a file in `spool_dir` (the temp dir)."""
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=spool_dir, prefix="bp-layer-", suffix=".tar.gz")
    files = deleted = size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            blob = _Hashing(out)
            with gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=level, mtime=0, filename="") as gz:
                tar_stream = _Hashing(gz)
                with tarfile.open(fileobj=tar_stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    for entry in sorted(entries, key=_order):
                        info, source = _member(entry)
                        if source is None:
                            tar.addfile(info)
                        else:
                            with open(source, "rb") as fh:
                                tar.addfile(info, fh)
                        if entry.kind == "whiteout":
                            deleted += 1
                        elif entry.kind != "dir":
                            files += 1
                            size += info.size
    except BaseException:
        os.unlink(name)
        raise
    return Layer(Path(name), "sha256:" + blob.hash.hexdigest(), "sha256:" + tar_stream.hash.hexdigest(), files,
                 deleted, size, blob.size)
