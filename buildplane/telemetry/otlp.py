"""Build Plane Events as OTLP log records over OTLP/HTTP, configured as the OTLP exporter specification says.

The `OTEL_EXPORTER_OTLP_*` variables (each also as `OTEL_EXPORTER_OTLP_LOGS_*`, which wins):
ENDPOINT, HEADERS, TIMEOUT (milliseconds), COMPRESSION (gzip|none), CERTIFICATE (a CA file),
CLIENT_CERTIFICATE / CLIENT_KEY, PROTOCOL (http/protobuf, http/json; grpc is refused in one line), and
OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME for the resource.

Sending follows the spec's retry rules inside the never-block budget: 429, 502, 503 and 504 are tried
again with exponential backoff, honouring `Retry-After` only while the whole send stays within
RETRY_BUDGET_S (below the reporter's exit flush); a kept-alive connection the Collector closed meanwhile
is reopened at once. A refused or broken connection fails the send at once: no Collector is there, and
retrying would only hold the run's exit. One POST per batch through the standard library's
http.client: httpx would cost the no-op `up` its import, for telemetry alone. The request is built with
the OTLP proto classes, not the SDK (whose log and resource machinery is a much larger import).
"""
from __future__ import annotations

import gzip
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import unquote, urlsplit

from .events import Event
from .sinks import SinkError, safe_url

RETRYABLE = (429, 502, 503, 504)
RETRY_BUDGET_S = 1.5  # a send, retries included; the reporter's exit flush for a working sink is 2 s
DEFAULT_TIMEOUT_S = 2.0  # the spec's 10 s default would outlast the exit budget
SEVERITY_NUMBER = {"INFO": 9, "ERROR": 17}  # OTLP's SeverityNumber: INFO, ERROR
PROTOCOLS = ("http/protobuf", "http/json")


def _var(environ, name: str) -> str:
    """OTEL_EXPORTER_OTLP_LOGS_NAME, else OTEL_EXPORTER_OTLP_NAME (the spec's precedence)."""
    return (environ.get(f"OTEL_EXPORTER_OTLP_LOGS_{name}") or environ.get(f"OTEL_EXPORTER_OTLP_{name}") or "").strip()


def logs_endpoint(environ) -> str | None:
    """OTEL_EXPORTER_OTLP_LOGS_ENDPOINT as given, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/logs (the spec's rule)."""
    if environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"]
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/logs" if base else None


def _pairs(raw: str) -> dict[str, str]:
    """`k=v,k2=v2` with URL-encoded values (the format of HEADERS and OTEL_RESOURCE_ATTRIBUTES)."""
    items = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {unquote(k).strip(): unquote(v).strip() for k, v in items if k.strip()}


def headers(environ) -> dict[str, str]:
    return _pairs(_var(environ, "HEADERS"))


@dataclass(frozen=True)
class OtlpConfig:
    endpoint: str
    service_name: str
    resource: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    gzip: bool = False
    protocol: str = "http/protobuf"
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @classmethod
    def from_env(cls, environ, endpoint: str, default_service: str) -> "OtlpConfig":
        """The exporter's settings; a setting it cannot honour is a SinkError naming the variable."""
        protocol = _var(environ, "PROTOCOL") or "http/protobuf"
        if protocol not in PROTOCOLS:
            raise SinkError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: buildplane exports OTLP over HTTP only; set "
                            "http/protobuf (or http/json) and point the endpoint at the Collector's HTTP port (4318)")
        compression = _var(environ, "COMPRESSION").lower() or "none"
        if compression not in ("gzip", "none"):
            raise SinkError(f"OTEL_EXPORTER_OTLP_COMPRESSION={compression}: gzip or none")
        timeout = _var(environ, "TIMEOUT")
        try:
            timeout_s = float(timeout) / 1000 if timeout else DEFAULT_TIMEOUT_S
        except ValueError:
            raise SinkError(f"OTEL_EXPORTER_OTLP_TIMEOUT={timeout}: milliseconds, e.g. 2000") from None
        resource = _pairs(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        # OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES, which wins over the topology.
        service = environ.get("OTEL_SERVICE_NAME") or resource.get("service.name") or default_service
        resource["service.name"] = service
        return cls(endpoint, service, resource, headers(environ), timeout_s if timeout_s > 0 else DEFAULT_TIMEOUT_S,
                   compression == "gzip", protocol, _var(environ, "CERTIFICATE") or None,
                   _var(environ, "CLIENT_CERTIFICATE") or None, _var(environ, "CLIENT_KEY") or None)


def _any_value(value, AnyValue):
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def encode_logs(batch: list[Event], service_name: str, resource: dict[str, str] | None = None,
                protocol: str = "http/protobuf") -> bytes:
    """An OTLP ExportLogsServiceRequest for `batch`: protobuf, or OTLP's JSON mapping for http/json."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    records = [LogRecord(
        time_unix_nano=e.time_unix_nano, observed_time_unix_nano=e.time_unix_nano, severity_text=e.severity,
        severity_number=SEVERITY_NUMBER.get(e.severity, 9), body=AnyValue(string_value=e.body), event_name=e.name,
        attributes=[KeyValue(key=k, value=_any_value(v, AnyValue)) for k, v in e.attributes.items()])
        for e in batch]
    attrs = {**(resource or {}), "service.name": service_name}
    res = Resource(attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()])
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=res, scope_logs=[ScopeLogs(scope=InstrumentationScope(name="buildplane"), log_records=records)])])
    if protocol == "http/json":
        from google.protobuf.json_format import MessageToJson
        return MessageToJson(request, use_integers_for_enums=True).encode()
    return request.SerializeToString()


def retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (delay-seconds, or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OtlpSink:
    """One POST of each batch to the logs endpoint, with the spec's retries inside RETRY_BUDGET_S."""

    name = "otlp"

    def __init__(self, config: OtlpConfig, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.where = safe_url(config.endpoint)
        self._sleep, self._clock = sleep, clock
        kind = "application/json" if config.protocol == "http/json" else "application/x-protobuf"
        self.headers = {**config.headers, "Content-Type": kind}
        if config.gzip:
            self.headers["Content-Encoding"] = "gzip"
        self._conn = None  # kept for the run's next batch
        self._reused = False  # whether the open connection has served a request already

    def _connection(self):
        import http.client

        if self._conn is None:
            parts = urlsplit(self.config.endpoint)
            if parts.scheme == "https":
                import ssl

                context = ssl.create_default_context(cafile=self.config.ca_file)
                if self.config.client_cert:
                    context.load_cert_chain(self.config.client_cert, self.config.client_key)
                self._conn = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                                         timeout=self.config.timeout_s, context=context)
            else:
                self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self.config.timeout_s)
            self._reused = False
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _post(self, path: str, body: bytes) -> tuple[int, str | None]:
        """(status, Retry-After) of one POST; a stale kept-alive connection is reopened once, at once."""
        import http.client

        for fresh in (False, True):
            conn = self._connection()
            reused = self._reused
            try:
                conn.request("POST", path, body=body, headers=self.headers)
                resp = conn.getresponse()
                resp.read()  # the connection serves the next batch only once the answer is consumed
                self._reused = True
                if resp.getheader("Connection", "").lower() == "close":
                    self._drop_connection()
                return resp.status, resp.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                if reused and not fresh and isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                                             BrokenPipeError)):
                    continue  # the Collector closed the idle connection: not a failure of the export
                raise
        raise AssertionError("unreachable")

    def send(self, batch: list[Event]) -> None:
        import http.client

        cfg = self.config
        body = encode_logs(batch, cfg.service_name, cfg.resource, cfg.protocol)
        if cfg.gzip:
            body = gzip.compress(body, compresslevel=5)
        parts = urlsplit(cfg.endpoint)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        deadline = self._clock() + RETRY_BUDGET_S
        backoff = 0.1
        while True:
            try:
                status, after = self._post(path, body)
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, a broken answer
                # No Collector there (or none answering): fail at once, so the run's exit does not wait on
                # retries; only a Collector that answers "later" (429, 502-504) is asked again.
                raise SinkError(f"export to {self.where} failed: {type(exc).__name__}") from None
            why = f"HTTP {status}"
            if 200 <= status < 300:
                return
            if status not in RETRYABLE:
                raise SinkError(f"export to {self.where} failed: {why}")
            wait = retry_after(after)
            wait = backoff if wait is None else wait
            if self._clock() + wait > deadline:
                hint = f" (Retry-After {after}s is past the exit budget)" if after else ""
                raise SinkError(f"export to {self.where} failed: {why}{hint}")
            self._sleep(wait)
            backoff *= 2
