"""An OCI distribution registry in memory, on httpx.MockTransport: the calls sync makes, answered the way
the distribution spec (and the lab's distribution 2.8) answers them — uploads are sessions (POST 202 with a
Location, PATCH, PUT with `?digest=` checked against the bytes), a manifest naming a blob the registry
lacks is refused (MANIFEST_BLOB_UNKNOWN), a HEAD or GET of what is not there is 404. Anything else: 405."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import httpx

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V2 = "application/vnd.docker.container.image.v1+json"
LAYER_V2 = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"errors": [{"code": code, "message": code.lower()}]})


class OciRegistry:
    def __init__(self, *, single_post: bool = False) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}  # digest → (bytes, media type)
        self.tags: dict[str, str] = {}  # "repo:tag" → digest
        self.uploads: dict[str, bytearray] = {}
        self.seen: list[str] = []
        self.single_post = single_post  # accept a monolithic POST ?digest= (some registries do, distribution does not)
        self.pushed_when: dict[str, tuple[Path, str]] = {}  # "repo:tag" → (a fake builder's marker file, digest)

    @property
    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    # -- what a test seeds and reads ---------------------------------------------------------
    def push_image(self, repo: str, tag: str, files: dict[str, bytes]) -> str:
        """An image of one layer holding `files` (image path → content), as a builder would push it."""
        layer_tar = tar_of(files)
        layer = gzip.compress(layer_tar, mtime=0)
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                             "rootfs": {"type": "layers", "diff_ids": [sha(layer_tar)]},
                             "history": [{"created_by": "COPY . /"}]}).encode()
        self.blobs[sha(layer)], self.blobs[sha(config)] = layer, config
        return self.put(repo, tag, {"schemaVersion": 2, "mediaType": MANIFEST_V2,
                                    "config": {"mediaType": CONFIG_V2, "digest": sha(config), "size": len(config)},
                                    "layers": [{"mediaType": LAYER_V2, "digest": sha(layer), "size": len(layer)}]})

    def push_on_build(self, repo: str, tag: str, marker: Path, files: dict[str, bytes]) -> str:
        """The image a fake builder pushes: in the registry once the build has run (its marker file exists)."""
        digest = self.push_image(repo, tag, files)
        self.pushed_when[f"{repo}:{tag}"] = (marker, self.tags.pop(f"{repo}:{tag}"))
        return digest

    def put(self, repo: str, tag: str, manifest: dict, media: str | None = None) -> str:
        body = json.dumps(manifest).encode()
        self.manifests[sha(body)] = (body, media or manifest["mediaType"])
        self.tags[f"{repo}:{tag}"] = sha(body)
        return sha(body)

    def manifest(self, repo: str, ref: str) -> dict:
        digest = ref if ref.startswith("sha256:") else self.tags[f"{repo}:{ref}"]
        return json.loads(self.manifests[digest][0])

    # -- the HTTP side -------------------------------------------------------------------------
    def handle(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        self.seen.append(f"{req.method} {path}")
        if path == "/v2/":
            return httpx.Response(200)
        name, kind, rest = self._split(path)
        if kind == "manifests":
            return self._manifests(req, name, rest)
        if kind == "blobs":
            if rest.startswith("uploads"):
                return self._uploads(req, name, rest.removeprefix("uploads").strip("/"))
            if req.method in ("GET", "HEAD"):
                if rest not in self.blobs:
                    return _error(404, "BLOB_UNKNOWN")
                return httpx.Response(200, content=self.blobs[rest] if req.method == "GET" else b"",
                                      headers={"docker-content-digest": rest})
        return httpx.Response(405)

    @staticmethod
    def _split(path: str) -> tuple[str, str, str]:
        body = path.removeprefix("/v2/")
        for kind in ("/manifests/", "/blobs/"):
            if kind in body:
                name, rest = body.split(kind, 1)
                return name, kind.strip("/"), rest
        if body.endswith("/blobs/uploads/"):
            return body.removesuffix("/blobs/uploads/"), "blobs", "uploads"
        return body, "", ""

    def _manifests(self, req: httpx.Request, name: str, ref: str) -> httpx.Response:
        if req.method in ("GET", "HEAD"):
            pending = self.pushed_when.get(f"{name}:{ref}")
            if pending and pending[0].exists():
                self.tags[f"{name}:{ref}"] = self.pushed_when.pop(f"{name}:{ref}")[1]
            digest = ref if ref.startswith("sha256:") else self.tags.get(f"{name}:{ref}")
            if digest not in self.manifests:
                return _error(404, "MANIFEST_UNKNOWN")
            body, media = self.manifests[digest]
            return httpx.Response(200, content=body if req.method == "GET" else b"",
                                  headers={"docker-content-digest": digest, "content-type": media})
        if req.method == "PUT":
            body = req.content
            try:
                manifest = json.loads(body)
            except ValueError:
                return _error(400, "MANIFEST_INVALID")
            media = req.headers.get("content-type", "")
            if manifest.get("mediaType", media) != media:
                return _error(400, "MANIFEST_INVALID")
            if "manifests" in manifest:  # an index names manifests the registry must have
                if any(m.get("digest") not in self.manifests for m in manifest["manifests"]):
                    return _error(400, "MANIFEST_UNKNOWN")
            else:
                for blob in [manifest.get("config", {}), *manifest.get("layers", [])]:
                    if blob.get("digest") not in self.blobs or len(self.blobs[blob["digest"]]) != blob.get("size"):
                        return _error(400, "MANIFEST_BLOB_UNKNOWN")
            self.manifests[sha(body)] = (body, media)
            self.tags[f"{name}:{ref}"] = sha(body)
            return httpx.Response(201, headers={"docker-content-digest": sha(body),
                                                "location": f"/v2/{name}/manifests/{sha(body)}"})
        return httpx.Response(405)

    def _uploads(self, req: httpx.Request, name: str, session: str) -> httpx.Response:
        if req.method == "POST" and not session:
            digest = req.url.params.get("digest")
            if digest and self.single_post:
                return self._finish(name, digest, bytearray(req.content))
            sid = uuid.uuid4().hex
            self.uploads[sid] = bytearray()
            return httpx.Response(202, headers={"location": f"http://registry.example/v2/{name}/blobs/uploads/{sid}?_state=s",
                                                "range": "0-0"})
        if session not in self.uploads:
            return _error(404, "BLOB_UPLOAD_UNKNOWN")
        if req.method == "PATCH":
            data = self.uploads[session]
            start = int(req.headers.get("content-range", f"{len(data)}-").split("-")[0])
            if start != len(data):
                return httpx.Response(416)
            data += req.content
            return httpx.Response(202, headers={"location": f"/v2/{name}/blobs/uploads/{session}?_state=t",
                                                "range": f"0-{len(data) - 1}"})
        if req.method == "PUT":
            data = self.uploads.pop(session) + req.content
            return self._finish(name, req.url.params.get("digest", ""), data)
        if req.method == "DELETE":  # the client gives up a session it did not use
            del self.uploads[session]
            return httpx.Response(204)
        return httpx.Response(405)

    def _finish(self, name: str, digest: str, data: bytearray) -> httpx.Response:
        if sha(bytes(data)) != digest:
            return _error(400, "DIGEST_INVALID")
        self.blobs[digest] = bytes(data)
        return httpx.Response(201, headers={"docker-content-digest": digest, "location": f"/v2/{name}/blobs/{digest}"})


def tar_of(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def layer_members(blob: bytes) -> dict[str, tarfile.TarInfo | bytes]:
    """A gzip layer's members: path → content (files) or the TarInfo (directories, links, whiteouts too)."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        for m in tar.getmembers():
            out[m.name] = tar.extractfile(m).read() if m.isfile() and m.size else m
    return out
