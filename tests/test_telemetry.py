"""Build Plane Events: the file sink, OTLP logs to a real receiver, ClickHouse SQL in chdb, the flush bound,
strict mode, redaction, and the numbers `events stats` shows."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT
from telemetry_backends import Blackhole, ChdbHttp, OtlpReceiver, closed_port_url
from fakes import DIGEST, up

from buildplane.commands._output import finish_telemetry
from buildplane.telemetry import events as ev
from buildplane.telemetry.reporter import EventReporter, SinkWorker
from buildplane.telemetry.setup import reporter_from_env
from buildplane.telemetry.sinks import FileSink, SinkError
from buildplane.telemetry.stats import local_stats, read_events

STATE = Path(".buildplane")
CONTRACT_STEP = {"cicd.pipeline.name", "cicd.pipeline.run.id", "cicd.pipeline.task.name", "cicd.pipeline.task.type",
                 "cicd.pipeline.task.run.result", "vcs.ref.head.revision", "buildplane.target", "buildplane.duration_ms",
                 "buildplane.reason"}
CONTRACT_BUILD = CONTRACT_STEP | {"buildplane.cache.scope", "buildplane.cache.cached_steps", "buildplane.cache.total_steps",
                                  "buildplane.image.digest"}


def file_events() -> list[dict]:
    return [json.loads(line) for line in (STATE / "events.jsonl").read_text().splitlines()]


def run_with(tools, environ: dict):
    reporter = reporter_from_env("demo-buildplane", STATE / "events.jsonl", environ)
    summary = up(tools, reporter=reporter)
    return summary, reporter.close()


def test_otlp_receiver_gets_every_event_with_the_contract_attributes(tools):
    with OtlpReceiver() as otlp:
        summary, report = run_with(tools, {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url})
    assert summary.exit_code == 0
    assert report.to_json()["sinks"]["otlp"] == {"where": f"{otlp.url}/v1/logs", "sent": report.events, "dropped": 0}
    names = [e["name"] for e in file_events()]
    assert names == ["run.started"] + ["step.started", "step.finished"] * 3 + ["run.finished"]  # build, release, smoke
    assert sorted(r["event_name"] for r in otlp.records) == sorted(names)
    assert set(otlp.content_types) == {"application/x-protobuf"}
    assert {r["resource"]["service.name"] for r in otlp.records} == {"demo-buildplane"}
    build = next(r for r in otlp.records if r["event_name"] == "step.finished"
                 and r["attributes"]["cicd.pipeline.task.name"] == "build api")["attributes"]
    assert CONTRACT_BUILD <= set(build), CONTRACT_BUILD - set(build)
    assert (build["cicd.pipeline.name"], build["cicd.pipeline.task.type"], build["cicd.pipeline.task.run.result"],
            build["buildplane.cache.scope"], build["buildplane.image.digest"]) == ("dev", "build", "success", "dev/api", DIGEST)
    assert build["cicd.pipeline.run.id"] == summary.run_id
    assert isinstance(build["buildplane.duration_ms"], int) and isinstance(build["buildplane.cache.total_steps"], int)
    release = next(r for r in otlp.records if r["event_name"] == "step.finished"
                   and r["attributes"].get("cicd.pipeline.task.name") == "release api")
    assert release["attributes"]["cicd.pipeline.task.type"] == "deploy" and CONTRACT_STEP <= set(release["attributes"])
    finished = next(r for r in otlp.records if r["event_name"] == "run.finished")
    assert finished["attributes"]["cicd.pipeline.result"] == "success"


def test_otel_service_name_wins_over_the_topology(tools):
    with OtlpReceiver() as otlp:
        run_with(tools, {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": otlp.url + "/v1/logs", "OTEL_SERVICE_NAME": "ci-runner"})
    assert {r["resource"]["service.name"] for r in otlp.records} == {"ci-runner"}


@pytest.fixture
def clickhouse(tmp_path):
    with ChdbHttp(str(tmp_path / "chdb"), user="bp", password="ch-pass-not-printed") as ch:
        # The FractalOps document's example: database `warehouse`, and the table left to its default.
        ch.session.query("CREATE DATABASE IF NOT EXISTS warehouse")
        ddl = (ROOT / "ops/telemetry/clickhouse/build_events.sql").read_text()
        ch.session.query(ddl.format(database="warehouse", table="build_events"))
        host_port = ch.url.removeprefix("http://")
        yield ch, {"FRACTALOPS_BUILD_EVENTS_ENABLED": "true", "FRACTALOPS_CLICKHOUSE_HOST_PORT": host_port,
                   "FRACTALOPS_CLICKHOUSE_DATABASE": "warehouse",
                   "FRACTALOPS_CLICKHOUSE_USER": "bp", "FRACTALOPS_CLICKHOUSE_PASSWORD": "ch-pass-not-printed"}


def test_clickhouse_direct_inserts_and_stats_match_the_local_file(tools, clickhouse, run_cli, monkeypatch):
    ch, env = clickhouse
    for _ in range(2):  # the stub registry never has the image: every run builds
        summary, report = run_with(tools, env)
        assert summary.exit_code == 0 and report.dropped == 0, report.to_json()
    Path("ctx/app.txt").write_text("v2\n")
    run_with(tools, env)
    rows = ch.query("SELECT EventName, Target, Step, TaskResult, CachedSteps, TotalSteps, ImageDigest "
                    "FROM warehouse.build_events ORDER BY Timestamp")
    assert len(rows) == len(file_events()) == 24
    assert {r["ImageDigest"] for r in rows if r["Step"] == "build" and r["EventName"] == "step.finished"} == {DIGEST}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from_ch = run_cli("--topology", "topology.yaml", "events", "stats", "--clickhouse", "--json")
    from_file = run_cli("--topology", "topology.yaml", "events", "stats", "--json")
    assert from_ch.code == 0, from_ch.err
    ch_rows, file_rows = json.loads(from_ch.out)["targets"], json.loads(from_file.out)["targets"]
    assert ch_rows == file_rows
    assert (file_rows[0]["target"], file_rows[0]["runs"], file_rows[0]["builds"]) == ("api", 3, 2)
    assert file_rows[0]["steps"]["release"]["count"] == 3
    assert "ch-pass-not-printed" not in (STATE / "events.jsonl").read_text() + from_ch.out + from_ch.err


def test_clickhouse_wrong_password_is_a_named_sink_failure(tools, clickhouse):
    _, env = clickhouse
    summary, report = run_with(tools, {**env, "FRACTALOPS_CLICKHOUSE_PASSWORD": "wrong-pw"})
    assert summary.exit_code == 0  # telemetry never changes the outcome…
    sink = report.to_json()["sinks"]["clickhouse"]
    assert sink["dropped"] == report.events and "HTTP 516" in sink["error"]
    assert "wrong-pw" not in json.dumps(report.to_json())


@pytest.mark.parametrize("backend", ["down", "blackholed"])
def test_collector_down_or_blackholed_changes_nothing_and_is_counted(tools, backend):
    hole = Blackhole() if backend == "blackholed" else None
    url = hole.url if hole else closed_port_url()
    try:
        summary, report = run_with(tools, {"OTEL_EXPORTER_OTLP_ENDPOINT": url})
    finally:
        if hole:
            hole.__exit__()
    assert summary.exit_code == 0 and summary.outcome == "succeeded"
    otlp = report.to_json()["sinks"]["otlp"]
    assert otlp["sent"] == 0 and otlp["dropped"] == report.events
    # the exit flush did not wait for the exporter's own retries: it gave up while still sending
    assert "still unsent at exit (sending)" in otlp["error"] or "failed" in otlp["error"]
    assert len(file_events()) == report.events  # the file sink is never held up by the Collector


def test_strict_mode_fails_the_run_naming_the_sink(tools, capsys):
    url = closed_port_url()
    reporter = reporter_from_env("demo", STATE / "events.jsonl", {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "FRACTALOPS_BUILD_EVENTS_STRICT": "true"})
    summary = up(tools, reporter=reporter)
    assert summary.exit_code == 0
    doc, code = finish_telemetry(reporter, summary.to_json(), summary.exit_code)
    err = capsys.readouterr().err
    assert code == 1 and doc["outcome"] == "failed"
    assert f"FRACTALOPS_BUILD_EVENTS_STRICT=true and telemetry sink otlp ({url}/v1/logs)" in err


def test_no_secret_reaches_an_event(monkeypatch):
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", "argo-tok-123456")
    text = ("push to https://bob:hunter2@registry.example/x failed; Authorization: Bearer abc.def.ghi; "
            "password=pw123 token: argo-tok-123456")
    clean = ev.redact(text)
    for secret in ("hunter2", "abc.def.ghi", "pw123", "argo-tok-123456"):
        assert secret not in clean
    assert "https://***@registry.example/x" in clean


class _Plan:
    mode, targets, revision = "dev", ["api"], "abc1234"


class _Step:
    def __init__(self, kind="build", target="api"):
        self.kind, self.target, self.id = kind, target, f"{kind}:{target}"


def test_full_queue_drops_and_counts_never_blocks():
    gate = threading.Event()

    class Slow:
        def send(self, batch):
            gate.wait(5)

    worker = SinkWorker("slow", "test", Slow, maxsize=3)
    reporter = EventReporter([worker])
    for _ in range(20):
        reporter.step_started(_Plan, "r1", _Step())
    assert worker.overflow > 0 and worker.accepted + worker.overflow == 20  # the queue held 3, the rest dropped
    gate.set()
    report = reporter.close()
    assert report.sinks["slow"] == {"where": "test", "sent": worker.accepted, "dropped": worker.overflow}


def test_failing_sink_is_named_not_raised():
    class Broken:
        def send(self, batch):
            raise SinkError("disk full")

    reporter = EventReporter([SinkWorker("file", "/x/events.jsonl", Broken)])
    reporter.step_started(_Plan, "r1", _Step())
    report = reporter.close()
    assert report.failed_sinks() == ["file (/x/events.jsonl): disk full"]


def test_file_sink_is_safe_under_concurrent_runs(tmp_path):
    path = tmp_path / "events.jsonl"
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from buildplane.telemetry.sinks import FileSink\nfrom buildplane.telemetry.events import Event\n"
            "s = FileSink(__import__('pathlib').Path(%r))\n"
            "for i in range(300): s.send([Event('step.started', i, {'w': sys.argv[1], 'pad': 'x' * 5000})])\n"
            % (str(ROOT), str(path)))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(w)]) for w in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    lines = path.read_text().splitlines()
    assert len(lines) == 900 and all(json.loads(line)["attributes"]["pad"] == "x" * 5000 for line in lines)


def write_events(events: list[tuple[int, str, dict]]) -> None:
    STATE.mkdir(exist_ok=True)
    with open(STATE / "events.jsonl", "w") as fh:
        for t, name, attrs in events:
            fh.write(json.dumps({"time_unix_nano": t, "name": name, "severity": "INFO", "attributes": attrs}) + "\n")
        fh.write("{torn line\n")


def build(run: str, target: str, result: str, ms: int, cached: int = 0, total: int = 0) -> dict:
    return {"cicd.pipeline.run.id": run, "buildplane.step": "build", "buildplane.target": target,
            "buildplane.cache.scope": f"dev/{target}", "cicd.pipeline.task.run.result": result,
            "buildplane.duration_ms": ms, "buildplane.cache.cached_steps": cached, "buildplane.cache.total_steps": total,
            "cicd.pipeline.task.name": f"build {target}"}


def test_events_stats_tail_and_html(workspace, run_cli):
    now = time.time_ns()
    old = now - 10 * 86400 * 10**9
    write_events([
        (old, "step.finished", build("r0", "api", "success", 9000, 0, 4)),
        (now - 3000, "step.finished", build("r1", "api", "success", 4000, 3, 4)),
        (now - 2000, "step.finished", build("r2", "api", "skip", 40)),
        (now - 1000, "step.finished", build("r2", "web", "failure", 100)),
    ])
    res = run_cli("--topology", "topology.yaml", "events", "stats", "--json")
    rows = {r["target"]: r for r in json.loads(res.out)["targets"]}
    assert (rows["api"]["runs"], rows["api"]["builds"], rows["api"]["fresh"]) == (3, 2, 1)
    assert rows["api"]["cache_hit_ratio"] == round(3 / 8, 3)
    assert rows["api"]["steps"]["build"] == {"count": 3, "p50_ms": 4000, "p95_ms": 9000}
    assert rows["web"]["failed"] == 1 and rows["web"]["cache_hit_ratio"] is None
    recent = json.loads(run_cli("--topology", "topology.yaml", "events", "stats", "--since", "7d", "--json").out)
    assert {r["target"]: r["runs"] for r in recent["targets"]} == {"api": 2, "web": 1}
    tail = run_cli("--topology", "topology.yaml", "events", "tail", "-n", "2").out.splitlines()
    assert len(tail) == 2 and "build api skip 40 ms" in tail[0] and "build web failure 100 ms" in tail[1]
    res = run_cli("--topology", "topology.yaml", "events", "stats", "--html", "out/ev.html")
    page = Path("out/ev.html").read_text()
    assert res.code == 0 and page.count('class="series"') == 3  # durations: api, web; hit ratio: api
    assert 'data-target="api"' in page and "38%" in page
    bad = run_cli("--topology", "topology.yaml", "events", "stats", "--since", "yesterday")
    assert bad.code == 2 and "valid: e.g. 30m, 2h, 7d" in bad.err


def test_local_stats_of_a_missing_file_is_empty(tmp_path):
    assert local_stats(read_events(tmp_path / "none.jsonl")) == []


def test_file_sink_failure_message(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_text("")
    with pytest.raises(SinkError, match="cannot append"):
        FileSink(blocker / "events.jsonl").send([ev.Event("run.started", 1, {})])


def test_direct_clickhouse_table_defaults_to_build_events():
    from buildplane.telemetry.setup import clickhouse_settings

    settings = clickhouse_settings({"FRACTALOPS_CLICKHOUSE_HOST_PORT": "127.0.0.1:8123"})
    assert settings["table"] == "build_events"
    assert clickhouse_settings({"FRACTALOPS_CLICKHOUSE_HOST_PORT": "h:1", "FRACTALOPS_BUILD_EVENTS_TABLE": "t"})["table"] == "t"
