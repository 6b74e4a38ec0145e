"""A proxy in front of a real lab registry, on loopback, that can break or slow what passes through.

Real-layer tests put it between the builder (or buildplane's registry client) and a real distribution
registry: `fail(method, path_regex, status, times)` answers the next matching requests with that status
(as a registry under load would), `reset(...)` closes the connection instead, and `latency_s` delays
every request (a registry across a network). The Host header is passed through unchanged, so upload
URLs the registry hands out point back at the proxy. Optional basic auth is added upstream, so a
client needs no credentials of its own for the proxy's address.
"""
from __future__ import annotations

import base64
import http.client
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


@dataclass
class Fault:
    method: str
    path: re.Pattern
    status: int | None  # None: reset the connection
    times: int


class RegistryProxy:
    def __init__(self, upstream: str, *, auth: tuple[str, str] | None = None, latency_s: float = 0.0) -> None:
        self.upstream_host, _, port = upstream.partition(":")
        self.upstream_port = int(port or 80)
        self.auth = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode() if auth else None
        self.latency_s = latency_s
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one_request(self):
                # BuildKit tries TLS first and falls back to plain HTTP only on Go's "server gave HTTP
                # response to HTTPS client": answer a ClientHello with a real HTTP status line, as a plain
                # registry does (http.server would answer it HTTP/0.9-style, without one).
                if self.rfile.peek(1)[:1] == b"\x16":
                    self.wfile.write(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    self.close_connection = True
                    return
                super().handle_one_request()

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _handle(self) -> None:
                body = self._body()
                if proxy.latency_s:
                    time.sleep(proxy.latency_s)
                fault = proxy._take_fault(self.command, self.path.split("?", 1)[0])
                if fault is not None and fault.status is None:
                    proxy._record(self.command, self.path, 0)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault is not None:
                    proxy._record(self.command, self.path, fault.status)
                    payload = b'{"errors":[{"code":"UNKNOWN","message":"injected by the test proxy"}]}'
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                self._forward(body)

            def _forward(self, body: bytes | None) -> None:
                # Repeated headers (Go sends one Accept line per media type) are joined, not collapsed.
                headers = {k: ", ".join(self.headers.get_all(k)) for k in dict.fromkeys(self.headers.keys())
                           if k.lower() not in HOP_HEADERS}
                if proxy.auth:
                    headers["Authorization"] = proxy.auth
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                proxy._record(self.command, self.path, resp.status)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_HEADERS and k.lower() != "content-length":
                        self.send_header(k, v)
                length = resp.getheader("Content-Length")
                self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def fail(self, method: str, path: str, status: int | None, times: int = 1) -> "RegistryProxy":
        """Answer the next `times` requests matching method and path regex with `status` (None: reset)."""
        with self._lock:
            self.faults.append(Fault(method, re.compile(path), status, times))
        return self

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.path.search(path):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.seen.append((method, path, status))

    def __enter__(self) -> "RegistryProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
