"""An image buildx wrote as an OCI layout (`--output type=oci,dest=DIR,tar=false`), pushed by buildplane.

Why (#13): BuildKit's own push asks the registry about each blob and puts the manifest one round trip
after another: ~0.4 s of a one-line edit on a registry 40 ms away, and the mode tag cost two more
round trips after it. Here the blobs this target's last push put in the same repository are not asked
about. The others go up at once, each into an upload session opened while the builder worked
(`Sessions`), so one PUT each. Then the manifest is put under each tag given, one after the other: a
distribution registry on filesystem storage truncates and rewrites the manifest's revision link on each
PUT, so two at once can fail each other. Two round trips for the content tag; the mode tag is
put by the tag step, while the release runs.

The layout is kept between builds, so BuildKit writes only the blobs the directory lacks (an 80 MB
image: 0.9 s written anew, 0.3 s kept). After each push it is pruned to the image just pushed. This way
is only for a builder on this machine: a remote builder's blobs would cross the network twice.
Reading the layout (`read_layout`) is apart from pushing it, and is tested on a layout buildx wrote.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import StepFailed
from ..state import read_json, write_json_atomic
from .registry_parts import BlobUnknown, in_parallel

IMAGE_MANIFESTS = ("application/vnd.oci.image.manifest.v1+json",
                   "application/vnd.docker.distribution.manifest.v2+json")
# A blob this large that the registry is not known to have is asked about first: a rebuild of the same
# layer (or another target's push) may have put it there, and asking is one round trip, not megabytes.
ASK_ABOVE = 1 << 20
CLOSE_WAIT_S = 1.0
PUSHED = "pushed.json"  # what the last push of this layout put where: {"repository", "blobs"}
# Present while buildx writes into the layout: a layout that still has it when the next build starts was
# left half-written (buildx or `up` killed mid-export) and is removed, never pushed.
WRITING = ".writing"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True)
class LayoutImage:
    digest: str  # the manifest's
    media_type: str
    manifest: bytes
    config: Blob
    layers: tuple[Blob, ...]

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)


def blob_path(root: Path, digest: str) -> Path:
    algorithm, _, hexa = digest.partition(":")
    return root / "blobs" / algorithm / hexa


class LayoutDamaged(StepFailed):
    """The layout does not hold a whole image (a blob short or altered): written again, never pushed."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


def read_layout(root: Path, digest: str | None = None) -> LayoutImage:
    """The one image manifest of the layout (the one with `digest`, when given: buildx's metadata file
    names it). BuildKit appends to a kept layout's index.json, so the same digest may stand there twice.
    An index (several platforms) is a StepFailed naming the layout; a blob missing, short or not matching
    its digest (manifest and config are hashed, layers' sizes checked) is a LayoutDamaged."""
    try:
        index = json.loads((root / "index.json").read_text())
        entries = {m.get("digest"): m for m in index.get("manifests", []) if isinstance(m, dict)}
        if digest:
            entries = {d: m for d, m in entries.items() if d == digest}
        if len(entries) != 1:
            raise ValueError(f"{len(entries)} manifests{' with digest ' + digest if digest else ''} in index.json")
        (entry,) = entries.values()
        media = entry.get("mediaType", "")
        if media not in IMAGE_MANIFESTS:
            raise ValueError(f"its manifest is a {media or 'document without a media type'}, not one image's")
        body = blob_path(root, entry["digest"]).read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StepFailed(f"the OCI layout buildx wrote to {root} cannot be pushed: {exc}") from None
    try:
        if "sha256:" + hashlib.sha256(body).hexdigest() != entry["digest"]:
            raise ValueError(f"manifest {entry['digest'][:19]} does not match its digest")
        manifest = json.loads(body)
        config = Blob(manifest["config"]["digest"], int(manifest["config"]["size"]))
        layers = tuple(Blob(layer["digest"], int(layer["size"])) for layer in manifest.get("layers", []))
        for blob in (config, *layers):
            path = blob_path(root, blob.digest)
            if not path.is_file():
                raise ValueError(f"blob {blob.digest[:19]} is missing")
            if path.stat().st_size != blob.size:
                raise ValueError(f"blob {blob.digest[:19]} has {path.stat().st_size} of its {blob.size} bytes")
        if _sha256(blob_path(root, config.digest)) != config.digest:
            raise ValueError(f"config {config.digest[:19]} does not match its digest")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LayoutDamaged(f"the OCI layout at {root} is damaged: {exc}") from None
    return LayoutImage(entry["digest"], media, body, config, layers)


def begin_write(root: Path) -> bool:
    """Before buildx writes into the kept layout: one left half-written (its WRITING mark is still there)
    is removed first; True when that happened. Then the mark is set until `end_write`."""
    wiped = (root / WRITING).exists()
    if wiped:
        wipe(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / WRITING).write_text(str(os.getpid()))
    return wiped


def end_write(root: Path) -> None:
    """The layout holds a whole image (read_layout said so)."""
    (root / WRITING).unlink(missing_ok=True)


def end_failed_write(root: Path) -> None:
    """After a build that failed: a failure before the export (the usual one: a step's error) left the
    layout as it was, and it keeps its blobs for the next build; one that may have cut the export short
    keeps its mark, so the next build starts from an empty layout."""
    try:
        index = json.loads((root / "index.json").read_text())
        for entry in index.get("manifests", []):
            read_layout(root, entry["digest"])
    except (OSError, ValueError, KeyError, TypeError, StepFailed):
        return
    end_write(root)


def wipe(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


def pushed_before(root: Path, repository: str) -> frozenset[str]:
    """The blobs this layout's last push put in `repository` ("host/repo"): not asked about again."""
    record = read_json(root / PUSHED) or {}
    if record.get("repository") != repository or not isinstance(record.get("blobs"), list):
        return frozenset()
    return frozenset(str(d) for d in record["blobs"])


class Sessions:
    """Upload sessions opened ahead, in the background while the builder works (a POST needs no digest):
    each new blob then goes up with one PUT instead of POST + PUT. The ones no blob took are given up."""

    def __init__(self, registry, host: str, repo: str, count: int) -> None:
        self.registry, self.host, self.repo = registry, host, repo
        self._ready: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._open, daemon=True, name="bp-upload") for _ in range(count)]
        for t in self._threads:
            t.start()

    def _open(self) -> None:
        try:
            location = self.registry.open_upload(self.host, self.repo)
        except Exception:  # noqa: BLE001 - the blob then opens its own session, and says what is wrong
            return
        with self._lock:
            self._ready.append(location)

    def take(self) -> str | None:
        """An open session, or None (none opened, or still opening: the caller opens its own)."""
        with self._lock:
            return self._ready.pop() if self._ready else None

    def close(self) -> None:
        """Give up the sessions no blob took (best effort: distribution purges them after a week anyway).
        One still opening after a failed build (a registry not answering) is not waited for long."""
        for t in self._threads:
            t.join(timeout=CLOSE_WAIT_S)
        with self._lock:
            left, self._ready = self._ready, []
        calls = [lambda loc=loc: self.registry.cancel_upload(self.host, self.repo, loc) for loc in left]
        try:
            in_parallel(calls)
        except Exception:  # noqa: BLE001 - cleanup; the push itself succeeded or said why it did not
            pass


def push(registry, root: Path, image: LayoutImage, host: str, repo: str, tags: list[str],
         sessions: Sessions | None = None) -> str:
    """Upload what the registry lacks, then put the manifest under each tag; the manifest's digest.
    A registry that lost a blob this machine pushed before (garbage-collected) refuses the manifest:
    then every blob is asked about, the missing ones sent, and the manifest put again."""
    known = pushed_before(root, f"{host}/{repo}")

    def send(blob: Blob, ask: bool) -> None:
        if ask and registry.has_blob(host, repo, blob.digest):
            return
        path = blob_path(root, blob.digest)
        location = sessions.take() if sessions is not None else None
        if location is None or not registry.finish_upload(host, repo, location, path, blob.digest):
            registry.push_blob(host, repo, path, blob.digest)

    def put_all() -> None:
        for tag in tags:  # one after the other: see the module's docstring
            registry.put_manifest(host, repo, tag, image.manifest, image.media_type)

    in_parallel([lambda b=blob: send(b, b.size > ASK_ABOVE) for blob in image.blobs if blob.digest not in known])
    cleanup = sessions.close if sessions is not None else (lambda: None)
    try:
        in_parallel([put_all, cleanup])
    except BlobUnknown:
        in_parallel([lambda b=blob: send(b, True) for blob in image.blobs if blob.digest in known])
        put_all()
    write_json_atomic(root / PUSHED, {"repository": f"{host}/{repo}", "blobs": [b.digest for b in image.blobs]})
    return image.digest


def prune(root: Path, image: LayoutImage) -> None:
    """Keep only the pushed image: its blobs, and index.json naming it alone (BuildKit appends to the
    index on every build into the kept layout), so the next build writes what it changes and nothing
    piles up or points at a blob that is gone."""
    keep = {image.digest, *(b.digest for b in image.blobs)}
    for path in (root / "blobs").glob("*/*"):
        if f"{path.parent.name}:{path.name}" not in keep:
            path.unlink(missing_ok=True)
    index = json.loads((root / "index.json").read_text())
    index["manifests"] = [m for m in index.get("manifests", []) if isinstance(m, dict)
                          and m.get("digest") == image.digest][:1]
    write_json_atomic(root / "index.json", index)
