"""Build Plane Events through the lab's real OpenTelemetry Collector (built with the Collector Builder):
the product's Collector config is loaded and validated by it, and a real run's events, sent over OTLP/HTTP,
come out of its file exporter exactly as buildplane recorded them in its own event file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, missing_component
from buildplane.telemetry.events import Event
from lab import lab_env, make_app, process_env

pytestmark = pytest.mark.real

CONTRACT = {"cicd.pipeline.name", "cicd.pipeline.run.id", "cicd.pipeline.task.name", "cicd.pipeline.task.type",
            "cicd.pipeline.task.run.result", "buildplane.target", "buildplane.cache.scope",
            "buildplane.cache.cached_steps", "buildplane.cache.total_steps", "buildplane.image.digest",
            "buildplane.duration_ms", "buildplane.reason"}


@pytest.fixture
def collector():
    lab = lab_env()
    if not lab.get("otelcol") or not Path(lab["otelcol"]).is_file():
        missing_component("the lab has no OpenTelemetry Collector (env.json names none): run `make lab-up`")
    return lab


def validate(lab: dict, config: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([lab["otelcol"], "validate", "--config", str(config)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})


def test_the_products_collector_config_is_loaded_and_validated_by_the_real_collector(collector, tmp_path):
    config = ROOT / "ops/telemetry/collector.yaml"
    text = config.read_text()
    assert "${env:FRACTALOPS_CLICKHOUSE_HOST_PORT}" in text and "${env:FRACTALOPS_CLICKHOUSE_DATABASE}" in text
    env = {"FRACTALOPS_CLICKHOUSE_HOST_PORT": "127.0.0.1:8123", "FRACTALOPS_CLICKHOUSE_DATABASE": "fractalops",
           "FRACTALOPS_CLICKHOUSE_USER": "u", "FRACTALOPS_CLICKHOUSE_PASSWORD": "p"}
    ok = validate(collector, config, **env)
    assert ok.returncode == 0, ok.stderr
    # The validation reads what it is given: a wrong processor option is refused, naming it.
    broken = tmp_path / "collector.yaml"
    broken.write_text(text.replace("send_batch_size: 1000", "send_batch_sise: 1000"))
    bad = validate(collector, broken, **env)
    assert bad.returncode != 0 and "send_batch_sise" in bad.stderr


def records_of(path: Path, run_id: str) -> list[tuple[dict, dict]]:
    """(resource attributes, log record) of every record the Collector wrote for this run."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        for rl in json.loads(line).get("resourceLogs", []):
            resource = {a["key"]: next(iter(a["value"].values())) for a in rl["resource"].get("attributes", [])}
            for sl in rl.get("scopeLogs", []):
                for rec in sl.get("logRecords", []):
                    attrs = {a["key"]: next(iter(a["value"].values()), None) for a in rec.get("attributes", [])}
                    if attrs.get("cicd.pipeline.run.id") == run_id:
                        out.append((resource, {**rec, "attrs": attrs}))
    return out


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_real_runs_events_come_out_of_the_collector_as_buildplane_sent_them(collector, tmp_path, compression):
    lab = collector
    app, _ = make_app(tmp_path, lab)
    env = process_env(lab, OTEL_EXPORTER_OTLP_ENDPOINT=lab["otlp_endpoint"], OTEL_EXPORTER_OTLP_COMPRESSION=compression,
                      OTEL_RESOURCE_ATTRIBUTES="deployment.environment=lab-test,host.name=ci%20runner",
                      FRACTALOPS_BUILD_EVENTS_STRICT="true")  # a lost event fails the run
    res = subprocess.run([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "up", "--mode", "dev",
                          "portal", "--build-only", "--json"], cwd=app, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    local = [json.loads(line) for line in (app / ".buildplane/events.jsonl").read_text().splitlines()]
    local = [e for e in local if e["attributes"].get("cicd.pipeline.run.id") == run_id]
    deadline = time.monotonic() + 15
    got: list = []
    while time.monotonic() < deadline and len(got) < len(local):
        got = records_of(Path(lab["collector_file"]), run_id)
        time.sleep(0.2)
    assert len(got) == len(local), (len(got), len(local))
    names = {e["name"] for e in local}
    assert {"run.started", "run.finished", "step.started", "step.finished"} <= names
    by_key = {(e["name"], str(e["time_unix_nano"])): e for e in local}
    for resource, rec in got:
        assert resource["service.name"] == "fractalops-buildplane"
        assert resource["deployment.environment"] == "lab-test" and resource["host.name"] == "ci runner"
        mine = by_key[(rec["eventName"], rec["timeUnixNano"])]
        assert rec["body"]["stringValue"] == Event(mine["name"], mine["time_unix_nano"], mine["attributes"]).body
        assert rec["severityText"] == mine["severity"] and rec["observedTimeUnixNano"] == rec["timeUnixNano"]
        assert set(rec["attrs"]) == set(mine["attributes"])
        for key, value in mine["attributes"].items():
            assert str(rec["attrs"][key]).lower() == str(value).lower(), key  # ints arrive as strings in OTLP JSON
    build_end = next(rec for _, rec in got if rec["eventName"] == "step.finished"
                     and rec["attrs"]["cicd.pipeline.task.name"] == "build portal")
    assert CONTRACT <= set(build_end["attrs"]), CONTRACT - set(build_end["attrs"])
    run_end = next(rec for _, rec in got if rec["eventName"] == "run.finished")
    assert run_end["attrs"]["cicd.pipeline.result"] == "success"
