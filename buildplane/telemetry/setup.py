"""Which sinks a run gets, from the environment (DESIGN §8); the file sink always."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInput
from .reporter import EventReporter, SinkWorker
from .otlp import logs_endpoint
from .sinks import ClickHouseSink, FileSink, clickhouse_url, safe_url


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def clickhouse_settings(environ) -> dict:
    """FRACTALOPS_* settings for the direct ClickHouse sink and `events stats --clickhouse`."""
    host = environ.get("FRACTALOPS_CLICKHOUSE_HOST_PORT", "")
    if not host:
        raise BadInput("FRACTALOPS_CLICKHOUSE_HOST_PORT is not set; give ClickHouse's HTTP host:port (e.g. 127.0.0.1:8123)")
    return {"host_port": host, "database": environ.get("FRACTALOPS_CLICKHOUSE_DATABASE") or "default",
            "table": environ.get("FRACTALOPS_BUILD_EVENTS_TABLE") or "build_events",
            "user": environ.get("FRACTALOPS_CLICKHOUSE_USER") or None,
            "password": environ.get("FRACTALOPS_CLICKHOUSE_PASSWORD") or None}


def reporter_from_env(service_name: str, path: Path, environ=None) -> EventReporter:
    """The file sink at `path` always; OTLP and ClickHouse as the environment asks."""
    environ = os.environ if environ is None else environ
    service = environ.get("OTEL_SERVICE_NAME") or service_name
    workers = [SinkWorker("file", str(path), lambda: FileSink(path))]
    endpoint = logs_endpoint(environ)
    if endpoint:
        def otlp_sink():  # in the sink's thread: the proto classes are its import, not the run's
            from .otlp import OtlpConfig, OtlpSink
            return OtlpSink(OtlpConfig.from_env(environ, endpoint, service_name))
        workers.append(SinkWorker("otlp", safe_url(endpoint), otlp_sink))
    if truthy(environ.get("FRACTALOPS_BUILD_EVENTS_ENABLED")):
        ch = clickhouse_settings(environ)
        workers.append(SinkWorker("clickhouse", safe_url(clickhouse_url(ch["host_port"])), lambda: ClickHouseSink(service_name=service, **ch)))
    return EventReporter(workers, strict=truthy(environ.get("FRACTALOPS_BUILD_EVENTS_STRICT")), environ=environ)
