"""A small HTTP/1.1 client on the standard library, for the registry calls of the edit loop.

Importing httpx costs ~60 ms, paid on every run that talks to a registry — a third of a sync across the
network. This client has the part of httpx's surface the registry client uses (`request`, `get`,
responses with `status_code`, `headers`, `content`, `text`, `json()`), keeps connections alive per host
(a pool, safe across threads), verifies TLS with the system's trust store (as docker does), and raises
three kinds of failure: `Timeout`, `Reset` (the connection broke: worth one more try) and `Unreachable`.
Where a proxy is configured (`HTTPS_PROXY`, …), the registry client uses httpx instead, which speaks to it.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import sys
import threading
import urllib.parse

# What sends a URL through a proxy, on the machines buildplane runs on: the environment (urllib reads the
# same variables; it costs ~8 ms to import, a sixtieth of a sync across the network).
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy")


def proxy_configured(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return any(k.lower() in PROXY_VARS and v for k, v in environ.items())


class Timeout(Exception):
    pass


class Reset(Exception):
    pass


class Unreachable(Exception):
    pass


class PlainHttpServer(Unreachable):
    """An https:// call answered by a server that speaks plain HTTP (the TLS handshake read an HTTP reply)."""


class UntrustedCertificate(Unreachable):
    """The server's certificate does not verify against the trust store (a private CA, a wrong name)."""


def tls_failure(exc: BaseException) -> Unreachable | None:
    """The TLS failures a registry's fix differs for; None for any other error."""
    ssl = sys.modules.get("ssl")
    if ssl is None or not isinstance(exc, ssl.SSLError):
        return None
    if isinstance(exc, ssl.SSLCertVerificationError):
        return UntrustedCertificate(exc.verify_message or exc.reason or "certificate verify failed")
    if exc.reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return PlainHttpServer(exc.reason)
    return None


class Headers:
    """Response headers, looked up without regard to case."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._d = {}
        for k, v in pairs:
            self._d[k.lower()] = v if k.lower() not in self._d else f"{self._d[k.lower()]}, {v}"

    def get(self, key: str, default=None):
        return self._d.get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return self._d[key.lower()]

    def __contains__(self, key: str) -> bool:
        return key.lower() in self._d


class Response:
    def __init__(self, status: int, reason: str, headers: Headers, content: bytes) -> None:
        self.status_code, self.reason_phrase, self.headers, self.content = status, reason, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        return json.loads(self.content)


class _Timeouts:
    def __init__(self, seconds: float) -> None:
        self.read = self.connect = seconds


class HttpClient:
    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = _Timeouts(timeout)
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls = None  # ssl.SSLContext, made (and ssl imported) for the first https host

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        with self._lock:
            idle = self._idle.get((scheme, netloc))
            if idle:
                return idle.pop()
            if scheme == "https" and self._tls is None:
                import ssl

                self._tls = ssl.create_default_context()
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=self.timeout.read, context=self._tls)
        return http.client.HTTPConnection(netloc, timeout=self.timeout.read)

    def open(self, url: str) -> None:
        """Connect (TCP, and TLS) to `url`'s host ahead of the first request, and keep the connection idle
        in the pool: the request that takes it saves the handshake's round trips."""
        parts = urllib.parse.urlsplit(url)
        conn = self._connection(parts.scheme, parts.netloc)
        try:
            conn.connect()
        except OSError:
            conn.close()
            return  # the real request will connect, and say what is wrong
        self._release(parts.scheme, parts.netloc, conn)

    def _release(self, scheme: str, netloc: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault((scheme, netloc), []).append(conn)

    def request(self, method: str, url: str, *, headers: dict | None = None, content: bytes | None = None,
                params: dict | None = None, auth: tuple[str, str] | None = None) -> Response:
        parts = urllib.parse.urlsplit(url)
        path = parts.path or "/"
        query = parts.query
        if params:
            query = "&".join(filter(None, [query, urllib.parse.urlencode(params)]))
        target = f"{path}?{query}" if query else path
        head = {k: v for k, v in (headers or {}).items()}
        if auth:
            head["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        if content is not None or method in ("POST", "PUT", "PATCH"):
            head.setdefault("Content-Length", str(len(content or b"")))
        reused = False
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: one new one
            conn = self._connection(parts.scheme, parts.netloc)
            reused = conn.sock is not None
            try:
                conn.request(method, target, body=content, headers=head)
                resp = conn.getresponse()
                body = resp.read()
            except (socket.timeout, TimeoutError):
                conn.close()
                raise Timeout(f"{method} {parts.netloc} timed out") from None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.IncompleteRead, http.client.BadStatusLine) as exc:
                conn.close()
                if reused and attempt == 1:
                    continue
                raise Reset(type(exc).__name__) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise (tls_failure(exc) or Unreachable(type(exc).__name__)) from None
            if resp.will_close:
                conn.close()
            else:
                self._release(parts.scheme, parts.netloc, conn)
            return Response(resp.status, resp.reason, Headers(resp.getheaders()), body)
        raise AssertionError("unreachable")

    def get(self, url: str, *, params: dict | None = None, auth: tuple[str, str] | None = None,
            headers: dict | None = None) -> Response:
        return self.request("GET", url, params=params, auth=auth, headers=headers)
