"""An image's parts in a registry, read and written by digest — manifests and blobs — for sync
(steps/sync.py): the write side of the registry client, on its one request path (auth, retries)."""
from __future__ import annotations

import hashlib

from ..errors import Missing, StepFailed

CHUNK = 32 << 20  # blobs above this are uploaded in PATCHes of this size
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


class ImageParts:
    """Mixed into RegistryClient, whose `_request` (auth, bounded retries) and `client` it uses."""

    def manifest(self, host: str, repo: str, reference: str) -> tuple[bytes, str]:
        """(bytes, media type) of a manifest or index, by tag or digest."""
        got = self._request("GET", host, f"/v2/{repo}/manifests/{reference}", f"repository:{repo}:pull",
                            headers={"Accept": MANIFEST_TYPES})
        if got.status_code != 200:
            raise Missing(f"registry {host}: cannot read {repo}@{reference} (HTTP {got.status_code})")
        return got.content, got.headers.get("content-type", "").split(";")[0].strip()

    def blob(self, host: str, repo: str, digest: str) -> bytes:
        """A blob's bytes; a redirect to the registry's storage is followed without our credentials."""
        got = self._request("GET", host, f"/v2/{repo}/blobs/{digest}", f"repository:{repo}:pull")
        if got.status_code in (301, 302, 303, 307, 308) and got.headers.get("location"):
            got = self.client.get(got.headers["location"])
        if got.status_code != 200:
            raise Missing(f"registry {host}: cannot read blob {digest[:19]} of {repo} (HTTP {got.status_code})")
        return got.content

    def push_blob(self, host: str, repo: str, data: bytes, digest: str) -> None:
        """Upload a blob: monolithic (POST, then one PUT) up to CHUNK bytes, chunked (PATCHes) above;
        a registry that takes the single POST (`?digest=`) is done after it."""
        scope = f"repository:{repo}:push,pull"
        small = len(data) <= CHUNK
        query = f"?digest={digest}" if small else ""
        start = self._request("POST", host, f"/v2/{repo}/blobs/uploads/{query}", scope,
                              content=data if small else b"",
                              headers={"Content-Type": "application/octet-stream"})
        if start.status_code == 201:
            return
        location = self._upload_location(host, repo, start)
        if not small:
            for offset in range(0, len(data), CHUNK):
                part = data[offset:offset + CHUNK]
                resp = self._request("PATCH", host, location, scope, content=part, headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + len(part) - 1}"})
                location = self._upload_location(host, repo, resp)
            data = b""
        sep = "&" if "?" in location else "?"
        done = self._request("PUT", host, f"{location}{sep}digest={digest}", scope, content=data,
                             headers={"Content-Type": "application/octet-stream"})
        if done.status_code not in (201, 204):
            raise StepFailed(f"registry {host}: upload of blob {digest[:19]} to {repo} ended with "
                             f"HTTP {done.status_code}")

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
            raise StepFailed(f"registry {host}: refused the manifest for {repo}:{tag} (HTTP {put.status_code}) "
                             f"{detail}".rstrip())
        return "sha256:" + hashlib.sha256(body).hexdigest()
