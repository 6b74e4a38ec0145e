"""Stopping Tilt when Tilt is a compiled program, as the real one is. The real Tilt cannot be built here (the
Go module proxy refuses github.com/tilt-dev/tilt), so these run a compiled stand-in
(fixtures/tilt-standin): its cmdline starts with plain `tilt`, its /proc/PID/exe is the binary — the facts
the script fakes of test_tilt.py hid. The stand-in answers `up`/`ci` only and exits 97 on anything else."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildplane.tools import tilt as tilt_proc

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def compiled_tilt(tmp_path_factory) -> Path:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        from conftest import missing_component
        missing_component("go is not installed: the compiled Tilt stand-in cannot be built")
    out = tmp_path_factory.mktemp("tilt-bin") / "tilt"
    subprocess.run([go, "build", "-o", str(out), "."], cwd=HERE / "fixtures/tilt-standin", check=True,
                   capture_output=True, timeout=300, env={**os.environ, "CGO_ENABLED": "0"})
    return out


@pytest.fixture
def env(compiled_tilt, tmp_path):
    return {**os.environ, "PATH": f"{compiled_tilt.parent}:{os.environ['PATH']}",
            "BUILDPLANE_STATE_DIR": str(tmp_path / "state"), "TILT_STANDIN_LOG": str(tmp_path / "tilt.log")}


def bp(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "buildplane", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def log(env: dict) -> list[str]:
    path = Path(env["TILT_STANDIN_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def test_tilt_down_stops_a_compiled_tilt_started_by_buildplane(env, workspace):
    proc = subprocess.Popen([sys.executable, "-m", "buildplane", "tilt", "up", "--", "--worker"], cwd=workspace,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: log(env))
        # What a compiled Tilt looks like from outside: argv[0] is `tilt`, not the binary's path.
        argv = tilt_proc.cmdline(proc.pid)
        assert argv == ["tilt", "up", "--", "--worker"]
        assert env["PATH"].split(":")[0] not in " ".join(argv)
        down = bp(env, workspace, "tilt", "down")
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == f"stopped Tilt (pid {proc.pid}, TERM)"
        assert proc.wait(timeout=10) == 0 and log(env)[-1] == "<SIGTERM>"
    finally:
        proc.kill()


def test_a_tilt_started_by_hand_in_this_tree_is_stopped_and_one_elsewhere_is_left_alone(env, workspace, tmp_path,
                                                                                      compiled_tilt):
    here = subprocess.Popen([str(compiled_tilt), "up"], cwd=workspace, env=env)
    elsewhere_dir = tmp_path / "other-repo"
    elsewhere_dir.mkdir()
    elsewhere = subprocess.Popen([str(compiled_tilt), "up"], cwd=elsewhere_dir, env=env)
    try:
        wait_for(lambda: len(log(env)) == 2)
        down = bp(env, workspace, "tilt", "down")
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == f"stopped Tilt (pid {here.pid}, started by hand, TERM)"
        assert here.wait(timeout=10) == 0
        assert elsewhere.poll() is None  # another working tree's Tilt
    finally:
        here.kill()
        elsewhere.kill()
        elsewhere.wait(timeout=10)


def test_a_tilt_that_runs_the_stop_itself_is_stopped_once_the_command_has_ended(env, workspace, tmp_path):
    """The Tilt UI's button: Tilt runs `buildplane tilt down` (or handback) as a local_resource in its own
    process group. Stopping Tilt first would stop the command with it; the command ends, then Tilt stops."""
    out = tmp_path / "down.out"
    child = f"{sys.executable} -m buildplane tilt down > {out} 2>&1; echo done >> {out}"
    proc = subprocess.Popen([sys.executable, "-m", "buildplane", "tilt", "up"], cwd=workspace,
                            env={**env, "TILT_STANDIN_RUN": child}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proc.wait(timeout=30) == 0  # Tilt was stopped by the stopper the command left behind
        said = out.read_text().splitlines()
        assert said[0] == f"Tilt (pid {proc.pid}) runs this command: it is stopped once this command has ended"
        assert said[-1] == "done"  # the command ran to its end before Tilt was stopped
        lines = log(env)
        assert lines.index("child exited: <nil>") < lines.index("<SIGTERM>")
        # and the stopper, once Tilt is gone, removes the record it no longer names
        wait_for(lambda: not (Path(env["BUILDPLANE_STATE_DIR"]) / "tilt.json").exists(), timeout=10)
    finally:
        proc.kill()
