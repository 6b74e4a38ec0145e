"""Where Build Plane Events go: the local file (always) and ClickHouse direct; OTLP/HTTP logs are
telemetry/otlp.py's, which shares SinkError and safe_url from here.

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
