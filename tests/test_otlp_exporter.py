"""The OTLP sink as the OTLP exporter specification asks (telemetry/otlp.py): its environment variables,
gzip, the resource, retries of 429/503 honouring Retry-After within the exit budget, a reconnect on a
stale kept-alive connection, TLS with a CA file. Against a small OTLP/HTTP stand-in on loopback that
answers as told and fails on anything else; the real Collector is in test_real_collector.py."""
from __future__ import annotations

import gzip
import http.server
import socketserver
import ssl
import subprocess
import threading

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from buildplane.telemetry import events
from buildplane.telemetry.otlp import RETRY_BUDGET_S, OtlpConfig, OtlpSink, retry_after
from buildplane.telemetry.setup import reporter_from_env
from buildplane.telemetry.sinks import SinkError


class Receiver:
    """OTLP/HTTP on loopback. `answers` is a list of (status, headers) given in turn; when it runs out, 200.
    `close_after_each` closes every connection after its answer although it said keep-alive (a Collector
    whose idle timeout ran out)."""

    def __init__(self, answers=(), close_after_each=False, tls: ssl.SSLContext | None = None):
        self.answers = list(answers)
        self.requests: list[dict] = []
        self.connections = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                outer.connections += 1
                super().setup()

            def do_POST(self):  # noqa: N802
                if self.path != "/v1/logs":
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append({"headers": dict(self.headers), "body": body})
                status, extra = outer.answers.pop(0) if outer.answers else (200, {})
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if close_after_each:
                    self.close_connection = True

            def log_message(self, *a):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        scheme = "https" if tls else "http"
        self.endpoint = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/v1/logs"

    def decoded(self, i: int = -1) -> ExportLogsServiceRequest:
        req = self.requests[i]
        body = req["body"]
        if req["headers"].get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return ExportLogsServiceRequest.FromString(body)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(request):
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]
    yield make
    for r in made:
        r.stop()


def event(name="step.finished", **attrs) -> events.Event:
    return events.Event(name=name, time_unix_nano=1_700_000_000_000_000_000, severity="INFO",
                        attributes={"cicd.pipeline.run.id": "r1", **attrs})


def sink(environ: dict, endpoint: str, sleeps: list | None = None) -> OtlpSink:
    clock = {"t": 0.0}

    def sleep(s):
        if sleeps is not None:
            sleeps.append(s)
        clock["t"] += s
    return OtlpSink(OtlpConfig.from_env(environ, endpoint, "fractalops-buildplane"), sleep=sleep,
                    clock=lambda: clock["t"])


def test_gzip_headers_and_resource_attributes_from_the_environment(receiver):
    r = receiver()
    env = {"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_HEADERS": "x-team=plat%20form,authorization=Bearer%20t",
           "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=lab,service.name=ignored,host.name=ws-1"}
    sink(env, r.endpoint).send([event()])
    req = r.requests[0]
    assert req["headers"]["Content-Encoding"] == "gzip" and req["headers"]["x-team"] == "plat form"
    assert req["headers"]["Content-Type"] == "application/x-protobuf"
    resource = {kv.key: kv.value.string_value for kv in r.decoded().resource_logs[0].resource.attributes}
    # service.name: OTEL_SERVICE_NAME > OTEL_RESOURCE_ATTRIBUTES > the topology; here the resource's
    assert resource == {"deployment.environment": "lab", "service.name": "ignored", "host.name": "ws-1"}
    named = sink({**env, "OTEL_SERVICE_NAME": "svc"}, r.endpoint)
    named.send([event()])
    assert {kv.key: kv.value.string_value for kv in r.decoded().resource_logs[0].resource.attributes}["service.name"] == "svc"


def test_logs_variables_win_over_the_general_ones_and_the_timeout_is_milliseconds():
    cfg = OtlpConfig.from_env({"OTEL_EXPORTER_OTLP_TIMEOUT": "7000", "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "1500",
                               "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION": "none",
                               "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem"}, "http://c:4318/v1/logs", "s")
    assert cfg.timeout_s == 1.5 and cfg.gzip is False and cfg.ca_file == "/etc/ca.pem"


@pytest.mark.parametrize("name, value, says", [
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "buildplane exports OTLP over HTTP only; set http/protobuf"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "gzip or none"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", "milliseconds"),
])
def test_a_setting_the_exporter_cannot_honour_is_one_line_and_never_fails_the_build(tmp_path, name, value, says):
    with pytest.raises(SinkError, match=says):
        OtlpConfig.from_env({name: value}, "http://c:4318/v1/logs", "s")
    rep = reporter_from_env("svc", tmp_path / "events.jsonl", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", name: value})
    rep.emit(event())
    report = rep.close()
    otlp = report.to_json()["sinks"]["otlp"]
    assert says in otlp["error"] and "\n" not in otlp["error"]
    assert (tmp_path / "events.jsonl").read_text().count("\n") == 1  # the file sink still has it


def test_http_json_is_otlps_json_mapping(receiver):
    r = receiver()
    sink({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, r.endpoint).send([event()])
    import json
    body = json.loads(r.requests[0]["body"])
    assert r.requests[0]["headers"]["Content-Type"] == "application/json"
    record = body["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert record["severityNumber"] == 9 and record["body"] == {"stringValue": event().body}
    assert record["timeUnixNano"] == "1700000000000000000" and record["eventName"] == "step.finished"


def test_429_and_503_are_tried_again_honouring_retry_after(receiver):
    r = receiver(answers=[(503, {"Retry-After": "0.3"}), (429, {}), (200, {})])
    sleeps: list[float] = []
    sink({}, r.endpoint, sleeps).send([event()])
    assert len(r.requests) == 3 and sleeps == [0.3, pytest.approx(0.2)]  # Retry-After, then the backoff


def test_a_retry_after_past_the_exit_budget_gives_up_at_once_and_says_so(receiver):
    r = receiver(answers=[(503, {"Retry-After": "30"})])
    sleeps: list[float] = []
    with pytest.raises(SinkError, match=r"HTTP 503 \(Retry-After 30s is past the exit budget\)"):
        sink({}, r.endpoint, sleeps).send([event()])
    assert sleeps == [] and len(r.requests) == 1


def test_retries_stop_at_the_budget(receiver):
    r = receiver(answers=[(503, {})] * 50)
    sleeps: list[float] = []
    with pytest.raises(SinkError, match="HTTP 503"):
        sink({}, r.endpoint, sleeps).send([event()])
    assert sum(sleeps) <= RETRY_BUDGET_S and len(r.requests) == len(sleeps) + 1


def test_a_client_error_is_not_retried(receiver):
    r = receiver(answers=[(400, {})])
    with pytest.raises(SinkError, match="HTTP 400"):
        sink({}, r.endpoint, []).send([event()])
    assert len(r.requests) == 1


def test_a_stale_kept_alive_connection_is_reopened_without_losing_the_batch(receiver):
    r = receiver(close_after_each=True)
    sleeps: list[float] = []
    s = sink({}, r.endpoint, sleeps)
    s.send([event("run.started")])
    s.send([event("run.finished")])  # the Collector closed the idle connection meanwhile
    assert [r.decoded(i).resource_logs[0].scope_logs[0].log_records[0].event_name for i in (0, 1)] == [
        "run.started", "run.finished"]
    assert r.connections == 2 and sleeps == []  # reopened at once, not retried after a backoff


def test_tls_with_the_ca_file_the_certificate_variable_names(receiver, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    r = receiver(tls=tls)
    with pytest.raises(SinkError, match="SSLCertVerificationError"):
        sink({}, r.endpoint, []).send([event()])
    sink({"OTEL_EXPORTER_OTLP_CERTIFICATE": str(cert)}, r.endpoint, []).send([event()])
    assert len(r.requests) == 1


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after("2") == 2.0 and retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_a_refused_connection_fails_at_once_without_retries():
    """No Collector listening: the send fails without a backoff, so the run's exit never waits on it."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        sleeps: list[float] = []
        with pytest.raises(SinkError, match="ConnectionRefusedError"):
            sink({}, f"http://127.0.0.1:{port}/v1/logs", sleeps).send([event()])
    assert sleeps == []
