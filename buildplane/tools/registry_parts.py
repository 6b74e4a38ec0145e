"""An image's parts in a registry, read and written by digest — manifests and blobs — for sync
(steps/sync.py) and the layout push (tools/layout_push.py): the write side of the registry client, on
its one request path (auth, retries)."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Callable

from ..errors import Missing, StepFailed

CHUNK = 32 << 20  # blobs above this are uploaded in PATCHes of this size
# Blobs up to this size ride in the POST too (`?digest=`): a registry that takes a single POST is done in one
# round trip; distribution ignores the body and wants the PUT, so a larger blob would cross the link twice.
SINGLE_POST = 256 << 10
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


class BlobUnknown(StepFailed):
    """The registry refused a manifest because it lacks a blob the manifest names (MANIFEST_BLOB_UNKNOWN)."""


class BadAnswer(StepFailed):
    """The registry (or a proxy before it) answered a read by digest with bytes of another digest."""


def verify(host: str, what: str, digest: str, data: bytes, kind: str = "") -> None:
    """A manifest or blob asked for by digest is those bytes, or a BadAnswer naming the registry: an HTML
    error page with status 200 is not kept, parsed or built on."""
    algorithm, _, want = digest.partition(":")
    if algorithm != "sha256":
        return
    if hashlib.sha256(data).hexdigest() != want:
        shown = f", {kind.split(';')[0].strip()}" if kind else ""
        raise BadAnswer(f"registry {host} answered {what} with {len(data)} bytes{shown} that are not that digest "
                        "(an error page from the registry or a proxy before it?); check the registry, then run again")


def in_parallel(calls: list[Callable[[], object]]) -> None:
    """Run the calls at once (one in this thread), wait for all; the first error is raised here. Uploads
    in flight together cost one round trip's wait, not one each."""
    errors: list[BaseException] = []

    def call(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:  # raised in the caller's thread below
            errors.append(exc)
    threads = [threading.Thread(target=call, args=(fn,), name="bp-registry", daemon=True) for fn in calls[1:]]
    for t in threads:
        t.start()
    if calls:
        call(calls[0])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _part(data: bytes | Path, offset: int, size: int) -> bytes:
    """`size` bytes of a blob at `offset`, from memory or from its file (a layer is not read whole)."""
    if isinstance(data, bytes):
        return data[offset:offset + size]
    with open(data, "rb") as fh:
        fh.seek(offset)
        return fh.read(size)


class ImageParts:
    """Mixed into RegistryClient, whose `_request` (auth, bounded retries) and `client` it uses."""

    def manifest(self, host: str, repo: str, reference: str) -> tuple[bytes, str]:
        """(bytes, media type) of a manifest or index, by tag or digest."""
        got = self._request("GET", host, f"/v2/{repo}/manifests/{reference}", f"repository:{repo}:pull",
                            headers={"Accept": MANIFEST_TYPES})
        if got.status_code != 200:
            raise Missing(f"registry {host}: cannot read {repo}@{reference} (HTTP {got.status_code})")
        kind = got.headers.get("content-type", "").split(";")[0].strip()
        if reference.startswith("sha256:"):
            verify(host, f"{repo}@{reference}", reference, got.content, kind)
        return got.content, kind

    def blob(self, host: str, repo: str, digest: str) -> bytes:
        """A blob's bytes; a redirect to the registry's storage is followed without our credentials."""
        got = self._request("GET", host, f"/v2/{repo}/blobs/{digest}", f"repository:{repo}:pull")
        if got.status_code in (301, 302, 303, 307, 308) and got.headers.get("location"):
            got = self.client.get(got.headers["location"])
        if got.status_code != 200:
            raise Missing(f"registry {host}: cannot read blob {digest[:19]} of {repo} (HTTP {got.status_code})")
        verify(host, f"blob {digest[:19]} of {repo}", digest, got.content, got.headers.get("content-type", ""))
        return got.content

    def has_blob(self, host: str, repo: str, digest: str) -> bool:
        """Whether the repository has the blob (one HEAD)."""
        resp = self._request("HEAD", host, f"/v2/{repo}/blobs/{digest}", f"repository:{repo}:push,pull")
        if resp.status_code in (200, 307):
            return True
        if resp.status_code == 404:
            return False
        raise Missing(f"registry {host} answered HTTP {resp.status_code} for blob {digest[:19]} of {repo}")

    def push_blob(self, host: str, repo: str, data: bytes | Path, digest: str) -> None:
        """Upload a blob, from memory or from its file: monolithic (POST, then one PUT) up to CHUNK bytes,
        chunked (PATCHes) above; a registry that takes the single POST (`?digest=`) is done after it."""
        size = len(data) if isinstance(data, bytes) else data.stat().st_size
        single = size <= SINGLE_POST
        start = self._request("POST", host, f"/v2/{repo}/blobs/uploads/{f'?digest={digest}' if single else ''}",
                              f"repository:{repo}:push,pull", content=_part(data, 0, size) if single else b"",
                              headers={"Content-Type": "application/octet-stream"})
        if start.status_code == 201:
            return
        if not self.finish_upload(host, repo, self._upload_location(host, repo, start), data, digest):
            raise StepFailed(f"registry {host}: lost the upload session of blob {digest[:19]} it had just opened")

    def open_upload(self, host: str, repo: str) -> str:
        """An upload session (POST: no digest needed yet), its location: opened ahead of the blob it takes."""
        start = self._request("POST", host, f"/v2/{repo}/blobs/uploads/", f"repository:{repo}:push,pull",
                              content=b"", headers={"Content-Type": "application/octet-stream"})
        return self._upload_location(host, repo, start)

    def finish_upload(self, host: str, repo: str, location: str, data: bytes | Path, digest: str) -> bool:
        """The blob into an open session: one PUT up to CHUNK bytes, PATCHes and a PUT above. False when
        the registry no longer knows the session (404: expired, or purged), so the caller opens another."""
        scope = f"repository:{repo}:push,pull"
        size = len(data) if isinstance(data, bytes) else data.stat().st_size
        body = _part(data, 0, size) if size <= CHUNK else b""
        if size > CHUNK:
            for offset in range(0, size, CHUNK):
                part = _part(data, offset, CHUNK)
                resp = self._request("PATCH", host, location, scope, content=part, headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(part) - 1}"})
                if resp.status_code == 404 and offset == 0:
                    return False
                location = self._upload_location(host, repo, resp)
        sep = "&" if "?" in location else "?"
        done = self._request("PUT", host, f"{location}{sep}digest={digest}", scope, content=body,
                             headers={"Content-Type": "application/octet-stream"})
        if done.status_code == 404 and size <= CHUNK:
            return False
        if done.status_code not in (201, 204):
            raise StepFailed(f"registry {host}: upload of blob {digest[:19]} to {repo} ended with "
                             f"HTTP {done.status_code}")
        return True

    def cancel_upload(self, host: str, repo: str, location: str) -> None:
        """Give up a session that took no blob (distribution would keep it a week)."""
        self._request("DELETE", host, location, f"repository:{repo}:push,pull")

    def _upload_location(self, host: str, repo: str, resp) -> str:
        """The upload session's path (registries answer absolute or relative URLs)."""
        location = resp.headers.get("location", "")
        if resp.status_code not in (202, 204) or not location:
            raise StepFailed(f"registry {host}: refused a blob upload to {repo} (HTTP {resp.status_code})")
        if location.startswith(("http://", "https://")):
            location = "/" + location.split("/", 3)[3]
        return location

    def put_manifest(self, host: str, repo: str, tag: str, body: bytes, media_type: str) -> str:
        """Store a manifest under `tag`; its digest (the sha256 of exactly these bytes)."""
        put = self._request("PUT", host, f"/v2/{repo}/manifests/{tag}", f"repository:{repo}:push,pull",
                            content=body, headers={"Content-Type": media_type})
        if put.status_code not in (200, 201):
            detail = put.text[:200].replace("\n", " ") if put.text else ""
            if put.status_code == 400 and "BLOB_UNKNOWN" in put.text:
                raise BlobUnknown(f"registry {host}: the manifest for {repo}:{tag} names a blob it lacks {detail}")
            raise StepFailed(f"registry {host}: refused the manifest for {repo}:{tag} (HTTP {put.status_code}) "
                             f"{detail}".rstrip())
        return "sha256:" + hashlib.sha256(body).hexdigest()
