"""Helpers for real-layer tests: find the lab, make an isolated copy of the example app per test."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import httpx

from conftest import ROOT, missing_component

LAB_ENV = Path(os.environ.get("BUILDPLANE_LAB_ENV") or Path.home() / ".cache/buildplane/lab/env.json")


def lab_env() -> dict:
    """The lab's facts, or fail (CI) / skip (elsewhere) saying what is missing."""
    if not LAB_ENV.is_file():
        missing_component(f"the local lab is not up ({LAB_ENV} missing): run `make lab-up`")
    lab = json.loads(LAB_ENV.read_text())
    sock = lab["DOCKER_HOST"].removeprefix("unix://")
    if not Path(sock).exists():
        missing_component(f"the lab's builder socket {sock} is missing: run `make lab-up`")
    for name in ("final", "cache", "mirror"):
        try:
            httpx.get(f"http://{lab[name]}/v2/", timeout=2)
        except httpx.HTTPError:
            missing_component(f"the lab's {name} registry {lab[name]} does not answer: run `make lab-up`")
    return lab


def process_env(lab: dict, *, cluster: bool = False, **extra) -> dict:
    """The environment of a buildplane run on the lab. The lab's cluster is seen only by a test that
    asks for it (`cluster=True`): the others render their releases, as they would with no cluster."""
    env = dict(os.environ)
    env.update(DOCKER_HOST=lab["DOCKER_HOST"], DOCKER_CONFIG=lab["DOCKER_CONFIG"],
               PATH=f"{lab['bin']}:{env['PATH']}")
    env["KUBECONFIG"] = lab["kubeconfig"] if cluster else os.devnull
    env.pop("BUILDPLANE_TOPOLOGY", None)
    env.pop("BUILDPLANE_KUBE_CONTEXT", None)
    env.update(extra)
    return env


def make_app(tmp: Path, lab: dict, *, final: str | None = None, cache: bool = True) -> tuple[Path, str]:
    """Copy the example app + charts into tmp with a topology whose image/cache namespace is unique."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    shutil.copytree(ROOT / "examples", tmp / "examples")
    shutil.copytree(ROOT / "charts", tmp / "charts")
    text = (ROOT / "ops/infra/topology/local.yaml").read_text()
    text = text.replace("127.0.0.1:15001/fractalops", final or f"{lab['final']}/{ns}")
    text = text.replace("127.0.0.1:15002/fractalops/buildcache", f"{lab['cache']}/{ns}/buildcache")
    if not cache:
        text = text.replace("cache: {import: true, export: true}", "cache: {import: false, export: false}")
    (tmp / "topology.yaml").write_text(text)
    return tmp, ns


def manifest_exists(ref: str, auth: tuple[str, str] | None = None) -> bool:
    host, rest = ref.split("/", 1)
    repo, _, tag = rest.rpartition(":")
    resp = httpx.head(f"http://{host}/v2/{repo}/manifests/{tag}", auth=auth, timeout=5, headers={
        "Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json"})
    return resp.status_code == 200


def final_auth(lab: dict) -> tuple[str, str]:
    return lab["final_user"], Path(lab["final_password_file"]).read_text().strip()


def prune_builder(lab: dict) -> None:
    env = process_env(lab)
    subprocess.run(["docker", "buildx", "prune", "-af"], env=env, check=True, capture_output=True, timeout=120)
    ids = subprocess.run(["docker", "image", "ls", "-q"], env=env, capture_output=True, text=True, timeout=60).stdout.split()
    if ids:
        subprocess.run(["docker", "image", "rm", "-f", *ids], env=env, capture_output=True, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
