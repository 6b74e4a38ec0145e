"""Where Build Plane Events go: the local file (always), OTLP/HTTP logs, ClickHouse direct.

Each sink's `send(batch)` raises SinkError on failure; the reporter runs sinks off the hot path.
A sink's `where` names it for people and never holds a credential.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


from .events import Event, redact

if TYPE_CHECKING:  # httpx is imported where a request is made: a run that makes none never loads it
    import httpx

CLICKHOUSE_COLUMNS = {  # column → attribute (the DDL in ops/telemetry/clickhouse/build_events.sql)
    "Pipeline": "cicd.pipeline.name", "RunId": "cicd.pipeline.run.id", "TaskName": "cicd.pipeline.task.name",
    "TaskType": "cicd.pipeline.task.type", "TaskResult": "cicd.pipeline.task.run.result",
    "PipelineResult": "cicd.pipeline.result", "Step": "buildplane.step", "Target": "buildplane.target",
    "CacheScope": "buildplane.cache.scope", "CachedSteps": "buildplane.cache.cached_steps",
    "TotalSteps": "buildplane.cache.total_steps", "ImageDigest": "buildplane.image.digest",
    "DurationMs": "buildplane.duration_ms", "Reason": "buildplane.reason", "Revision": "vcs.ref.head.revision",
}
NUMERIC = {"CachedSteps", "TotalSteps", "DurationMs"}


class SinkError(Exception):
    pass


def safe_url(url: str) -> str:
    """The URL without userinfo, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class FileSink:
    """`.buildplane/events.jsonl`: append-only; one write per line under an flock, so concurrent runs never interleave."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def send(self, batch: list[Event]) -> None:
        data = "".join(json.dumps(e.to_json(), separators=(",", ":")) + "\n" for e in batch).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SinkError(f"cannot append to {self.path}: {exc.strerror}") from None


def _verify(url: str) -> bool:
    # Plain http needs no trust store; loading one costs ~25 ms a client, paid by every run.
    return url.startswith("https://")


def otlp_logs_endpoint(environ) -> str | None:
    """OTEL_EXPORTER_OTLP_LOGS_ENDPOINT as given, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/logs (the SDK's rule)."""
    if environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"]
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/logs" if base else None


def otlp_headers(environ) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_(LOGS_)HEADERS: `k=v,k2=v2`, URL-encoded values (the spec's format)."""
    from urllib.parse import unquote

    raw = environ.get("OTEL_EXPORTER_OTLP_LOGS_HEADERS") or environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {unquote(k).strip(): unquote(v).strip() for k, v in pairs}


SEVERITY_NUMBER = {"INFO": 9, "ERROR": 17}  # OTLP's SeverityNumber: INFO, ERROR


def _any_value(value, AnyValue):
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def encode_logs(batch: list[Event], service_name: str) -> bytes:
    """An OTLP ExportLogsServiceRequest (protobuf) for `batch`, built with the OTLP proto classes alone.

    The SDK's encoder would cost ~65 ms of imports per run (the SDK's log and resource machinery);
    the proto classes cost ~13 ms, in the sink's own thread."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    records = [LogRecord(
        time_unix_nano=e.time_unix_nano, observed_time_unix_nano=e.time_unix_nano, severity_text=e.severity,
        severity_number=SEVERITY_NUMBER.get(e.severity, 9), body=AnyValue(string_value=e.body), event_name=e.name,
        attributes=[KeyValue(key=k, value=_any_value(v, AnyValue)) for k, v in e.attributes.items()])
        for e in batch]
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service_name))])
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=resource, scope_logs=[ScopeLogs(scope=InstrumentationScope(name="buildplane"), log_records=records)])])
    return request.SerializeToString()


class OtlpSink:
    """Build Plane Events as OTLP log records, POSTed as protobuf to /v1/logs (OTLP/HTTP).

    One POST per batch through the standard library's http.client: a run that makes no other request
    (the no-op `up`) would otherwise import httpx (~50 ms of CPU) only for its telemetry."""

    name = "otlp"

    def __init__(self, endpoint: str, service_name: str, timeout_s: float = 2.0, headers: dict | None = None) -> None:
        self.endpoint = endpoint
        self.where = safe_url(endpoint)
        self.service_name = service_name
        self.timeout_s = timeout_s
        self.headers = {**(headers or {}), "Content-Type": "application/x-protobuf"}
        self._conn = None  # kept for the run's next batch (http.client reopens it if the Collector closed it)

    def _connection(self):
        import http.client

        if self._conn is None:
            parts = urlsplit(self.endpoint)
            if parts.scheme == "https":
                import ssl

                self._conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=self.timeout_s,
                                                         context=ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.timeout_s)
        return self._conn

    def send(self, batch: list[Event]) -> None:
        import http.client

        body = encode_logs(batch, self.service_name)
        parts = urlsplit(self.endpoint)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = self._connection()
        try:
            conn.request("POST", path, body=body, headers=self.headers)
            resp = conn.getresponse()
            resp.read()  # the connection serves the next batch only once the answer is consumed
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, a broken answer
            conn.close()
            self._conn = None
            raise SinkError(f"export to {self.where} failed: {type(exc).__name__}") from None
        if status >= 300:
            raise SinkError(f"export to {self.where} failed: HTTP {status}")


def clickhouse_url(host_port: str) -> str:
    """ClickHouse's HTTP interface from FRACTALOPS_CLICKHOUSE_HOST_PORT (`host:port`, or a URL)."""
    base = host_port if host_port.startswith(("http://", "https://")) else f"http://{host_port}"
    return base.rstrip("/") + "/"


def clickhouse_headers(user: str | None, password: str | None) -> dict[str, str]:
    """Credentials as headers (never in the URL, so they cannot reach a log line)."""
    return {k: v for k, v in (("X-ClickHouse-User", user), ("X-ClickHouse-Key", password)) if v}


def clickhouse_row(e: Event, service_name: str) -> dict:
    ts = datetime.fromtimestamp(e.time_unix_nano // 1_000_000_000, timezone.utc)
    row = {"Timestamp": ts.strftime("%Y-%m-%d %H:%M:%S") + f".{e.time_unix_nano % 1_000_000_000:09d}",
           "EventName": e.name, "ServiceName": service_name, "Severity": e.severity}
    for column, attr in CLICKHOUSE_COLUMNS.items():
        value = e.attributes.get(attr)
        row[column] = int(value or 0) if column in NUMERIC else ("" if value is None else str(value))
    row["Attributes"] = {k: str(v) for k, v in e.attributes.items()}
    return row


class ClickHouseSink:
    """Direct inserts over ClickHouse's HTTP interface (for controlled runners)."""

    name = "clickhouse"

    def __init__(self, host_port: str, database: str, table: str, service_name: str, *, user: str | None = None,
                 password: str | None = None, timeout_s: float = 2.0, client: httpx.Client | None = None) -> None:
        self.url = clickhouse_url(host_port)
        self.table = f"{database}.{table}"
        self.where = f"{safe_url(self.url)} table {self.table}"
        self.service_name = service_name
        import httpx

        self._http = client or httpx.Client(timeout=timeout_s, headers=clickhouse_headers(user, password),
                                            verify=_verify(self.url))

    def send(self, batch: list[Event]) -> None:
        body = "".join(json.dumps(clickhouse_row(e, self.service_name)) + "\n" for e in batch)
        query = f"INSERT INTO {self.table} FORMAT JSONEachRow"
        import httpx

        try:
            resp = self._http.post(self.url, params={"query": query}, content=body.encode())
        except httpx.HTTPError as exc:
            raise SinkError(f"{self.where}: {type(exc).__name__}") from None
        if resp.status_code >= 300:
            raise SinkError(f"{self.where}: HTTP {resp.status_code}: {redact(resp.text.strip()[:200])}")
