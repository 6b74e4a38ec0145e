"""The lab cluster's routes: what an ingress in front of the dev namespace would serve.

KWOK's pods run nothing, so this process stands in for the containers behind each route: for every
request it asks the real API server which image the release's Deployment runs and whether it is
available, then serves the files of exactly that image, taken from the lab's builder (`docker create`
+ `docker cp` of the served directory, once per digest). A route whose Deployment is missing or not
available answers 503, as an ingress with no ready endpoint does. So the route smoke checks the
release that really happened, not the working tree.

    routes.py KUBECONFIG PORT=NAMESPACE/RELEASE/CONTAINER:DIR [PORT=…]   (started and stopped by up.sh/down.sh)

Each request it answers is a line in CONTAINER's log ($BP_LAB_CONTAINER_LOGS), which KWOK serves as the
pod's log: `buildplane logs` reads what the route smoke did.
"""
from __future__ import annotations

import http.server
import json
import mimetypes
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

CACHE = Path(tempfile.mkdtemp(prefix="bp-lab-routes-"))
_lock = threading.Lock()


def kubectl(kubeconfig: str, *args: str) -> dict:
    out = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *args, "-o", "json"], capture_output=True,
                         text=True, timeout=15)
    if out.returncode != 0:
        raise LookupError(out.stderr.strip() or "kubectl failed")
    return json.loads(out.stdout)


def released_image(kubeconfig: str, namespace: str, release: str) -> str:
    """The image of the release's available Deployment (LookupError when none is available)."""
    found = kubectl(kubeconfig, "-n", namespace, "get", "deployments", "-l", f"app.kubernetes.io/instance={release}")
    for dep in found.get("items", []):
        status = dep.get("status", {})
        if status.get("availableReplicas", 0) >= 1 and status.get("updatedReplicas", 0) >= 1:
            return dep["spec"]["template"]["spec"]["containers"][0]["image"]
    raise LookupError(f"no available deployment of release {release} in {namespace}")


def files_of(image: str, directory: str) -> Path:
    """The image's `directory`, copied out of it once per image reference (they pin a digest)."""
    key = CACHE / image.replace("/", "_").replace(":", "_").replace("@", "_")
    with _lock:
        if not key.is_dir():
            subprocess.run(["docker", "pull", "-q", image], check=True, capture_output=True, timeout=120)
            cid = subprocess.run(["docker", "create", image], check=True, capture_output=True, text=True,
                                 timeout=60).stdout.strip()
            try:
                tmp = Path(tempfile.mkdtemp(dir=CACHE))
                subprocess.run(["docker", "cp", f"{cid}:{directory.rstrip('/')}/.", str(tmp)], check=True,
                               capture_output=True, timeout=60)
                tmp.rename(key)
            finally:
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True, timeout=60)
    return key


LOGS = Path(os.environ.get("BP_LAB_CONTAINER_LOGS", CACHE))


def log_request(container: str, line: str) -> None:
    """One CRI-format line in the container's log file, which KWOK serves as the pod's log."""
    import datetime
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    with _lock, open(LOGS / f"{container}.log", "a") as fh:
        fh.write(f"{stamp} stdout F {line}\n")


def handler_for(kubeconfig: str, namespace: str, release: str, directory: str, container: str):
    class Route(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                root = files_of(released_image(kubeconfig, namespace, release), directory)
            except (LookupError, subprocess.SubprocessError) as exc:
                return self._answer(503, f"no ready endpoint: {exc}\n".encode(), "text/plain")
            rel = self.path.split("?", 1)[0].lstrip("/") or "index.html"
            path = (root / rel).resolve()
            if path.is_dir():
                path = path / "index.html"
            if root.resolve() not in path.parents or not path.is_file():
                return self._answer(404, b"not found\n", "text/plain")
            self._answer(200, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")

        def _answer(self, code: int, body: bytes, kind: str) -> None:
            log_request(container, f"{self.command} {self.path} {code}")
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    return Route


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main(argv: list[str]) -> int:
    kubeconfig, routes = argv[0], argv[1:]
    servers = []
    for spec in routes:
        port, _, rest = spec.partition("=")
        where, _, directory = rest.partition(":")
        namespace, release, container = where.split("/")
        servers.append(Server(("127.0.0.1", int(port)), handler_for(kubeconfig, namespace, release, directory,
                                                                   container)))
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(CACHE, ignore_errors=True)
    return 0


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: (shutil.rmtree(CACHE, ignore_errors=True), os._exit(0)))
    sys.exit(main(sys.argv[1:]))
