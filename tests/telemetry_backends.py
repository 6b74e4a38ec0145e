"""Telemetry back ends on loopback: an OTLP/HTTP logs receiver that decodes ExportLogsServiceRequest
(opentelemetry-proto), and ClickHouse's HTTP interface in front of the real engine (chdb)."""
from __future__ import annotations

import gzip
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse


def any_value(v):
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


class _Server:
    def __init__(self, handler) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class OtlpReceiver(_Server):
    """POST /v1/logs (protobuf) → `records`: one dict per log record with resource, body and attributes."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.content_types: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    data = gzip.decompress(data)
                receiver.content_types.append(self.headers.get("Content-Type", ""))
                if self.path != "/v1/logs":
                    self.send_response(404)
                    self.end_headers()
                    return
                req = ExportLogsServiceRequest()
                req.ParseFromString(data)
                for rl in req.resource_logs:
                    resource = {a.key: any_value(a.value) for a in rl.resource.attributes}
                    for sl in rl.scope_logs:
                        for r in sl.log_records:
                            receiver.records.append({
                                "resource": resource, "scope": sl.scope.name, "event_name": r.event_name,
                                "severity": r.severity_text, "body": any_value(r.body), "time": r.time_unix_nano,
                                "attributes": {a.key: any_value(a.value) for a in r.attributes}})
                out = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        super().__init__(Handler)


class ChdbHttp(_Server):
    """ClickHouse's HTTP interface (query in `?query=` or the body; INSERT data in the body), run by chdb."""

    def __init__(self, path: str, user: str = "default", password: str = "") -> None:
        from chdb import session

        self.session = session.Session(path)
        self.lock = threading.Lock()
        self.queries: list[str] = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _run(self, body: bytes) -> None:
                if (self.headers.get("X-ClickHouse-User", "default"), self.headers.get("X-ClickHouse-Key", "")) != (user, password):
                    return self._answer(516, b"Code: 516. DB::Exception: default: Authentication failed")
                query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
                sql = f"{query}\n{body.decode()}" if query else body.decode()
                backend.queries.append(sql.split("\n", 1)[0])
                try:
                    with backend.lock:
                        res = backend.session.query(sql)
                    self._answer(200, res.bytes() if res is not None else b"")
                except Exception as exc:  # ClickHouse answers 500 with the exception text
                    self._answer(500, str(exc).encode())

            def do_POST(self):
                self._run(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def do_GET(self):
                self._run(b"")

        super().__init__(Handler)

    def query(self, sql: str):
        with self.lock:
            res = self.session.query(sql, "JSON")
        return json.loads(res.bytes())["data"] if res is not None and res.bytes() else []

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.session.close()


class Blackhole:
    """A TCP port that accepts connections and never answers (a Collector behind a dead network path)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
