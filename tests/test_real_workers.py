"""Shared build workers on the real lab (#17, marker `real`): the lab's second dockerd, reached as the Docker
context `bp-worker`, builds the example targets and pushes them (and their registry cache) itself — the
workstation's daemon never sees the image; the no-op path needs no builder at all; a worker that is down
is exit 4 before any target starts."""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import run_process
from lab import final_auth, lab_env, make_app, manifest_exists, process_env

pytestmark = pytest.mark.real


def images(lab: dict, ns: str, *context: str) -> list[str]:
    proc = subprocess.run(["docker", *context, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
                          env=process_env(lab), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if f"/{ns}/" in line]


def test_targets_build_on_the_worker_and_never_reach_the_workstation(tmp_path):
    lab = lab_env()
    if "worker_context" not in lab:
        pytest.fail("the lab has no build worker: run `make lab-down lab-up` with this checkout's ops/lab")
    app, ns = make_app(tmp_path / "app", lab)
    text = (app / "topology.yaml").read_text()
    (app / "topology.yaml").write_text(text.replace("  network: host", f"  network: host\n  name: {lab['worker_context']}"))
    res = run_process(["--topology", "topology.yaml", "up", "--mode", "dev", "--json"], cwd=app,
                      env=process_env(lab, BUILDPLANE_WAIT_CACHE="true"), timeout=300)
    assert res.code == 0, res.err
    targets = json.loads(res.out)["targets"]
    for name in ("runtime", "portal"):
        assert targets[name]["build"] == "built"
        assert manifest_exists(targets[name]["image"], final_auth(lab))  # pushed from the worker
        assert manifest_exists(f"{lab['cache']}/{ns}/buildcache/dev/{name}:latest")  # its cache exported there too
    assert images(lab, ns) == []  # the workstation's image store never had them
    assert len(images(lab, ns, "--context", lab["worker_context"])) == 2

    # The no-op path asks no builder anything: a recording docker in front of the real one sees no call.
    calls = tmp_path / "docker-calls.log"
    shim = tmp_path / "bin" / "docker"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {shutil.which("docker")} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = process_env(lab)
    env["PATH"] = f"{shim.parent}:{env['PATH']}"
    res = run_process(["--topology", "topology.yaml", "up", "--mode", "dev", "--json"], cwd=app, env=env, timeout=120)
    assert res.code == 0, res.err
    assert {t["build"] for t in json.loads(res.out)["targets"].values()} == {"fresh"}
    assert not calls.exists(), calls.read_text()


def test_a_worker_that_is_down_is_exit_4_before_any_target_starts(tmp_path):
    lab = lab_env()
    app, ns = make_app(tmp_path / "app", lab)
    config = tmp_path / "docker-config"  # the lab's Docker config, plus a context whose daemon is gone
    shutil.copytree(lab["DOCKER_CONFIG"], config, symlinks=True, ignore=shutil.ignore_patterns("contexts"))
    env = process_env(lab, DOCKER_CONFIG=str(config))
    subprocess.run(["docker", "context", "create", "bp-gone", "--docker", f"host=unix://{tmp_path}/gone.sock"],
                   env=env, check=True, capture_output=True, timeout=60)
    res = run_process(["--topology", "topology.yaml", "up", "--mode", "dev", "--builder", "bp-gone"], cwd=app,
                      env=env, timeout=120)
    assert res.code == 4, res.err
    last = res.err.strip().splitlines()[-1]
    assert "Docker context bp-gone (--builder) does not answer" in last
    assert "docker --context bp-gone buildx inspect --bootstrap" in last
    assert "building" not in res.err  # no target started
    for name in ("runtime", "portal"):
        assert not manifest_exists(f"{lab['final']}/{ns}/fractalops-{name}:latest", final_auth(lab))
    assert not (Path(app) / ".buildplane/state/build-dev-runtime.json").exists()
