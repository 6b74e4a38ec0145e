"""An image buildx wrote as an OCI layout (`--output type=oci,dest=DIR,tar=false`), pushed by buildplane.

Why (#13): BuildKit's own push asks the registry about each blob and puts the manifest one round trip
after another: ~0.4 s of a one-line edit on a registry 40 ms away, and the mode tag cost two more
round trips after it. Here the blobs this target's last push put in the same repository are not asked
about. The others go up at once, one upload session each. The manifest is put under the content tag
and the mode tag together. That is three round trips in all.

The layout is kept between builds, so BuildKit writes only the blobs the directory lacks (an 80 MB
image: 0.9 s written anew, 0.3 s kept). After each push it is pruned to the image just pushed. This way
is only for a builder on this machine: a remote builder's blobs would cross the network twice.
Reading the layout (`read_layout`) is apart from pushing it, and is tested on a layout buildx wrote.
"""
from __future__ import annotations

import json
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
PUSHED = "pushed.json"  # what the last push of this layout put where: {"repository", "blobs"}


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


def read_layout(root: Path, digest: str | None = None) -> LayoutImage:
    """The one image manifest of the layout (the one with `digest`, when given: buildx's metadata file
    names it). An index (several platforms) or a missing blob is a StepFailed naming the layout."""
    try:
        index = json.loads((root / "index.json").read_text())
        entries = [m for m in index.get("manifests", []) if isinstance(m, dict)]
        if digest:
            entries = [m for m in entries if m.get("digest") == digest]
        if len(entries) != 1:
            raise ValueError(f"{len(entries)} manifests{' with digest ' + digest if digest else ''} in index.json")
        entry = entries[0]
        media = entry.get("mediaType", "")
        if media not in IMAGE_MANIFESTS:
            raise ValueError(f"its manifest is a {media or 'document without a media type'}, not one image's")
        body = blob_path(root, entry["digest"]).read_bytes()
        manifest = json.loads(body)
        config = Blob(manifest["config"]["digest"], int(manifest["config"]["size"]))
        layers = tuple(Blob(layer["digest"], int(layer["size"])) for layer in manifest.get("layers", []))
        for blob in (config, *layers):
            if not blob_path(root, blob.digest).is_file():
                raise ValueError(f"blob {blob.digest[:19]} is missing")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StepFailed(f"the OCI layout buildx wrote to {root} cannot be pushed: {exc}") from None
    return LayoutImage(entry["digest"], media, body, config, layers)


def pushed_before(root: Path, repository: str) -> frozenset[str]:
    """The blobs this layout's last push put in `repository` ("host/repo"): not asked about again."""
    record = read_json(root / PUSHED) or {}
    if record.get("repository") != repository or not isinstance(record.get("blobs"), list):
        return frozenset()
    return frozenset(str(d) for d in record["blobs"])


def push(registry, root: Path, image: LayoutImage, host: str, repo: str, tags: list[str]) -> str:
    """Upload what the registry lacks, then put the manifest under every tag at once; the manifest's digest.
    A registry that lost a blob this machine pushed before (garbage-collected) refuses the manifest:
    then every blob is asked about, the missing ones sent, and the manifest put again."""
    known = pushed_before(root, f"{host}/{repo}")

    def send(blob: Blob, ask: bool) -> None:
        if ask and registry.has_blob(host, repo, blob.digest):
            return
        registry.push_blob(host, repo, blob_path(root, blob.digest), blob.digest)

    def put_all() -> None:
        in_parallel([lambda t=tag: registry.put_manifest(host, repo, t, image.manifest, image.media_type)
                     for tag in tags])

    in_parallel([lambda b=blob: send(b, b.size > ASK_ABOVE) for blob in image.blobs if blob.digest not in known])
    try:
        put_all()
    except BlobUnknown:
        in_parallel([lambda b=blob: send(b, True) for blob in image.blobs if blob.digest in known])
        put_all()
    write_json_atomic(root / PUSHED, {"repository": f"{host}/{repo}", "blobs": [b.digest for b in image.blobs]})
    return image.digest


def prune(root: Path, image: LayoutImage) -> None:
    """Keep only the pushed image's blobs: the next build writes what it changes, nothing piles up."""
    keep = {image.digest, *(b.digest for b in image.blobs)}
    for path in (root / "blobs").glob("*/*"):
        if f"{path.parent.name}:{path.name}" not in keep:
            path.unlink(missing_ok=True)
