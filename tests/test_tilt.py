"""`buildplane tilt up|ci|down`: Tilt runs as the very process the wrapper recorded, so `tilt down`, make and
deploy mode stop exactly that process (TERM, then KILL) and say honestly whether one was running.
The fake `tilt` runs until signalled and records the signal; it fails on any other call."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from argo_standin import TOKEN, AppScript, ArgoStandIn, app_doc, write_topology
from buildplane.tools import tilt as tilt_proc
from conftest import ROOT, run_process
from fakes import FakeTool


@pytest.fixture
def tilt_env(workspace, tmp_path):
    bin_dir = tmp_path / "bin"
    fake = FakeTool(bin_dir, "tilt").expect("up", until_signalled=True).expect("ci", until_signalled=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BUILDPLANE_STATE_DIR": str(tmp_path / "state")}
    return fake, env, tmp_path / "state" / "tilt.json"


def start_tilt(env: dict, cwd: Path, fake: FakeTool, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "buildplane", "tilt", "up", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    record = Path(env["BUILDPLANE_STATE_DIR"]) / "tilt.json"
    while time.monotonic() < deadline:
        rec = tilt_proc.read_record(record)
        if rec is not None and rec.is_running() and fake.calls:  # Tilt itself is up and has said so
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the wrapper never became a running Tilt")


def test_tilt_up_becomes_tilt_and_tilt_down_stops_exactly_it(tilt_env, workspace):
    fake, env, record = tilt_env
    proc = start_tilt(env, workspace, fake, "--", "--worker")
    try:
        rec = tilt_proc.read_record(record)
        assert rec.pid == proc.pid and rec.argv == ["tilt", "up", "--", "--worker"]  # exec: the same process
        assert fake.calls == [["up", "--", "--worker"]]
        again = run_process(["tilt", "up"], workspace, env)
        assert again.code == 2 and f"Tilt already runs (pid {proc.pid}" in again.err
        down = run_process(["tilt", "down"], workspace, env)
        assert down.code == 0, down.err
        assert down.out.strip() == f"stopped Tilt (pid {proc.pid}, TERM)"
        assert proc.wait(timeout=10) == 0
        assert fake.calls[-1] == ["<SIGTERM>"] and fake.unexpected() == [["<SIGTERM>"]]
        assert not record.exists()
        twice = run_process(["tilt", "down"], workspace, env)
        assert twice.code == 0 and "Tilt is not running (no `buildplane tilt up` recorded here)" in twice.out
    finally:
        proc.kill()


def test_a_tilt_that_ignores_term_is_killed(tmp_path):
    fake = FakeTool(tmp_path / "bin", "tilt").expect("up", until_signalled=True, ignore_term=True)
    proc = subprocess.Popen([str(fake.path), "up"])
    try:
        while not fake.calls:
            time.sleep(0.05)
        record = tmp_path / "tilt.json"
        record.write_text(json.dumps({"pid": proc.pid, "ticks": tilt_proc.start_ticks(proc.pid),
                                      "binary": str(fake.path), "argv": ["tilt", "up"]}))
        said = tilt_proc.stop(record, grace_s=0.5)
        assert said == f"stopped Tilt (pid {proc.pid}, KILL after 0.5s)"
        assert proc.wait(timeout=10) == -9 and ["<SIGTERM>"] in fake.calls
    finally:
        proc.kill()


def test_a_recorded_pid_now_held_by_another_program_is_left_alone(tmp_path):
    """PID reuse: the record names a PID that is alive but is not (or no longer) that Tilt."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        record = tmp_path / "tilt.json"
        record.write_text(json.dumps({"pid": other.pid, "ticks": tilt_proc.start_ticks(other.pid),
                                      "binary": "/opt/tilt/bin/tilt", "argv": ["tilt", "up"]}))
        assert tilt_proc.stop(record, grace_s=0.2) == f"Tilt is not running (pid {other.pid} has exited): nothing to stop"
        record.write_text(json.dumps({"pid": other.pid, "ticks": 1, "binary": "sleep", "argv": ["tilt", "up"]}))
        assert "has exited" in tilt_proc.stop(record, grace_s=0.2)  # same binary name, other start time
        assert other.poll() is None  # never signalled
    finally:
        other.kill()
        other.wait()


def test_tilt_not_installed_is_exit_4_with_how_to_get_it(workspace, tmp_path):
    env = {**os.environ, "PATH": "/usr/bin:/bin", "BUILDPLANE_STATE_DIR": str(tmp_path / "state")}
    for action in ("up", "ci"):
        res = run_process(["tilt", action], workspace, env)
        assert res.code == 4 and "tilt: not found on PATH" in res.err and "docs.tilt.dev/install" in res.err
    assert not (tmp_path / "state" / "tilt.json").exists()


def test_deploy_mode_stops_the_recorded_tilt_and_never_touches_kubernetes(tilt_env, workspace, tmp_path):
    fake, env, record = tilt_env
    kubectl, helm = FakeTool(tmp_path / "bin", "kubectl"), FakeTool(tmp_path / "bin", "helm")  # any call fails
    proc = start_tilt(env, workspace, fake)
    try:
        with ArgoStandIn({"demo-api": AppScript([app_doc("demo-api")])}, token=TOKEN) as argo:
            write_topology(argo.url, ["demo-api"])
            res = run_process(["--topology", "topology.yaml", "up", "--mode", "deploy", "--json"], workspace,
                              {**env, "ARGOCD_AUTH_TOKEN": TOKEN})
        assert res.code == 0, res.err
        assert json.loads(res.out)["tilt"] == f"stopped Tilt (pid {proc.pid}, TERM)"
        assert proc.wait(timeout=10) == 0 and argo.violations == []
        assert kubectl.calls == [] and helm.calls == [] and fake.calls[-1] == ["<SIGTERM>"]
    finally:
        proc.kill()


def test_make_tilt_down_and_deploy_mode_say_when_no_tilt_runs(tmp_path):
    """From the repository, as a user runs it: nothing recorded → said so, and the handback goes on."""
    bin_dir = tmp_path / "bin"
    fake = FakeTool(bin_dir, "tilt")  # no call expected: nothing to stop is known without asking Tilt
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "BUILDPLANE_STATE_DIR": str(tmp_path / "state")}
    down = subprocess.run(["make", "-s", "tilt-down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "Tilt is not running (no `buildplane tilt up` recorded here): nothing to stop" in down.stdout
    with ArgoStandIn({"fractalops-api": AppScript([app_doc("fractalops-api")])}, token=TOKEN) as argo:
        topo = tmp_path / "t.yaml"
        text = (ROOT / "ops/infra/topology/local.yaml").read_text().replace("https://127.0.0.1:18443", argo.url)
        topo.write_text(text)
        for app in ("fractalops-portal", "fractalops-worker"):
            argo.apps[app] = AppScript([app_doc(app)])
        out = subprocess.run(["make", "-s", "deploy-mode"], cwd=ROOT, env={**env, "ARGOCD_AUTH_TOKEN": TOKEN,
                             "BUILDPLANE_TOPOLOGY": str(topo)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Tilt is not running" in out.stderr and argo.violations == [] and fake.calls == []


@pytest.mark.parametrize("target", ["tilt-up", "tilt-down", "tilt-ci", "staging-mode", "deploy-mode"])
def test_mode_targets_need_only_the_package_never_provisioning(target, tmp_path):
    """On a workstation: no apt-get, no lab builder, no Chromium download — the venv and the package only."""
    out = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "provision.sh" not in out.stdout and "apt-get" not in out.stdout
    assert "pip install -q --disable-pip-version-check -e ." in out.stdout and "[test]" not in out.stdout
    assert ".venv/bin/buildplane" in out.stdout
