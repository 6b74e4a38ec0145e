"""The standard-library HTTP client of the registry calls (tools/http.py), against a real HTTP server on
loopback: kept-alive connections, HEAD, bodies, query and Basic auth, and the three ways a call fails."""
from __future__ import annotations

import base64
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from buildplane.errors import Missing
from buildplane.tools import http
from buildplane.tools.registry import RegistryClient


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    seen: list = []

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.seen.append(("HEAD", self.path, self.client_address[1]))
        self._answer(200, b"", {"Docker-Content-Digest": "sha256:" + "1" * 64})

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, self.client_address[1], self.headers.get("Authorization")))
        if self.path.startswith("/reset"):
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection breaks before any answer
            return
        if self.path.startswith("/slow"):
            threading.Event().wait(1.0)
        self._answer(200, b'{"ok": true}', {"Content-Type": "application/json", "X-Twice": "a"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, self.client_address[1], body))
        self._answer(202, b"", {"Location": "/v2/x/blobs/uploads/1?_state=s"})


@pytest.fixture
def server():
    Handler.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_requests_share_one_kept_alive_connection(server):
    client = http.HttpClient(timeout=5)
    head = client.request("HEAD", server + "/v2/x/manifests/t")
    assert head.status_code == 200 and head.content == b"" and head.headers["docker-content-digest"].startswith("sha256:")
    got = client.get(server + "/v2/", params={"scope": "repository:x:pull"}, auth=("u", "p"))
    assert got.json() == {"ok": True} and got.headers.get("x-twice") == "a"
    posted = client.request("POST", server + "/v2/x/blobs/uploads/?digest=sha256:1", content=b"layer")
    assert posted.status_code == 202 and posted.headers["Location"].startswith("/v2/x/blobs/uploads/1")
    ports = {entry[2] for entry in Handler.seen}
    assert len(ports) == 1  # one connection for the three calls
    assert Handler.seen[1][1] == "/v2/?scope=repository%3Ax%3Apull"
    assert Handler.seen[1][3] == "Basic " + base64.b64encode(b"u:p").decode()
    assert Handler.seen[2][3] == b"layer"


def test_the_three_failures(server):
    client = http.HttpClient(timeout=0.3)
    with pytest.raises(http.Timeout):
        client.get(server + "/slow")
    with pytest.raises(http.Reset):
        client.get(server + "/reset")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening: the connection is refused
        with pytest.raises(http.Unreachable):
            http.HttpClient(timeout=1).get(f"http://127.0.0.1:{closed}/v2/")


def test_the_registry_client_uses_it_and_says_what_failed(server, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    host = server.removeprefix("http://")
    reg = RegistryClient(attempts=1)
    assert reg.manifest_digest(f"{host}/x:t") == "sha256:" + "1" * 64
    assert isinstance(reg.client, http.HttpClient)
    slow = RegistryClient(attempts=1, timeout=0.3)
    with pytest.raises(Missing, match="did not answer within 0.3s"):
        slow._request("GET", host, "/slow", "")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert type(RegistryClient().client).__module__.startswith("httpx")  # a proxy: httpx speaks to it
