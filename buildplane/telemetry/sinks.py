"""Where Build Plane Events go: the local file (always), OTLP/HTTP logs, ClickHouse direct.

Each sink's `send(batch)` raises SinkError on failure; the reporter runs sinks off the hot path.
A sink's `where` names it for people and never holds a credential.
"""
from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from .events import Event, redact

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


class OtlpSink:
    """OpenTelemetry SDK log records, encoded by the SDK's OTLP encoder, POSTed as protobuf to /v1/logs.

    The SDK's own HTTP exporter would cost ~80 ms of import (requests) per run; httpx is loaded already.
    """

    name = "otlp"

    def __init__(self, endpoint: str, service_name: str, timeout_s: float = 2.0, headers: dict | None = None,
                 client: httpx.Client | None = None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.endpoint = endpoint
        self.where = safe_url(endpoint)
        self._resource = Resource.create({"service.name": service_name})
        self._scope = InstrumentationScope("buildplane")
        self._http = client or httpx.Client(timeout=timeout_s, verify=_verify(endpoint), headers={
            **(headers or {}), "Content-Type": "application/x-protobuf"})

    def send(self, batch: list[Event]) -> None:
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
        from opentelemetry.sdk._logs import ReadableLogRecord

        records = [ReadableLogRecord(LogRecord(
            timestamp=e.time_unix_nano, observed_timestamp=e.time_unix_nano, severity_text=e.severity,
            severity_number=SeverityNumber.ERROR if e.severity == "ERROR" else SeverityNumber.INFO,
            body=e.body, attributes=e.attributes, event_name=e.name), resource=self._resource,
            instrumentation_scope=self._scope) for e in batch]
        try:
            resp = self._http.post(self.endpoint, content=encode_logs(records).SerializeToString())
        except httpx.HTTPError as exc:
            raise SinkError(f"export to {self.where} failed: {type(exc).__name__}") from None
        if resp.status_code >= 300:
            raise SinkError(f"export to {self.where} failed: HTTP {resp.status_code}")


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
        self._http = client or httpx.Client(timeout=timeout_s, headers=clickhouse_headers(user, password),
                                            verify=_verify(self.url))

    def send(self, batch: list[Event]) -> None:
        body = "".join(json.dumps(clickhouse_row(e, self.service_name)) + "\n" for e in batch)
        query = f"INSERT INTO {self.table} FORMAT JSONEachRow"
        try:
            resp = self._http.post(self.url, params={"query": query}, content=body.encode())
        except httpx.HTTPError as exc:
            raise SinkError(f"{self.where}: {type(exc).__name__}") from None
        if resp.status_code >= 300:
            raise SinkError(f"{self.where}: HTTP {resp.status_code}: {redact(resp.text.strip()[:200])}")
