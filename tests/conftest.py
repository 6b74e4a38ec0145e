"""Shared fixtures: a minimal valid workspace, and the CLI run in-process or as a real process."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from buildplane import cli

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"

BASE_TOPOLOGY = textwrap.dedent("""\
    version: 1
    name: demo
    registries:
      final: registry.example/team
      mirror: mirror.example:8083
      cache: cache.example:8082/team/buildcache
      plain_http: [cache.example:8082]
    kube:
      contexts: [lab]
    protected_namespaces: [prod]
    targets:
      api:
        context: ctx
        dockerfile: ctx/Dockerfile
        image: demo-api
        chart: chart
        values: [chart/values-dev.yaml]
        smoke: [{url: "http://127.0.0.1:9/healthz", status: 200}]
      web:
        context: ctx
        dockerfile: ctx/Dockerfile
        image: demo-web
        optional: true
    modes:
      dev: {namespace: demo-dev, tag: "dev-{git_sha}-{digest12}", cache: {import: true, export: true}, release: true}
      staging: {namespace: demo-staging, tag: "staging-{git_sha}", cache: {import: true, export: false}, release: false}
      deploy:
        argo: {server: "https://argocd.example", apps: [demo-api], token_env: ARGOCD_AUTH_TOKEN, timeout_s: 60}
    telemetry:
      service_name: demo-buildplane
    """)


def missing_component(reason: str) -> None:
    """A real-layer component is missing: fail in CI (no silent skip there), skip elsewhere with the reason."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _cache_export_inline(monkeypatch):
    """The dev loop's background cache export is a detached process: every test gets the export inside
    the build (what CI gets), and the tests of the background export (test_cache_export.py) ask for it."""
    monkeypatch.setenv("BUILDPLANE_WAIT_CACHE", "true")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A directory with a valid topology and the files it names; the CWD for the test."""
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY app.txt /app.txt\n")
    (tmp_path / "ctx" / "app.txt").write_text("v1\n")
    (tmp_path / "chart" / "templates").mkdir(parents=True)
    (tmp_path / "chart" / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (tmp_path / "chart" / "values-dev.yaml").write_text("{}\n")
    (tmp_path / "topology.yaml").write_text(BASE_TOPOLOGY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("BUILDPLANE_KUBE_CONTEXT", raising=False)
    monkeypatch.delenv("BUILDPLANE_TOPOLOGY", raising=False)
    return tmp_path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    def run(*args: str) -> CliResult:
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)
    return run


def run_process(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 120) -> CliResult:
    """The CLI as a real process (what Tilt and make run)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "buildplane", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


RENDERED = """---
# Source: demo/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo-api
  labels:
    app: demo-api
spec:
  replicas: 1
"""
# `helm status -o json` of a deployed release (fields buildplane reads: info.status, version).
HELM_STATUS = '{"name":"demo-api","info":{"first_deployed":"2026-11-20T10:00:00Z","status":"deployed"},"version":7,"namespace":"demo-dev"}\n'


@pytest.fixture
def tools(workspace, tmp_path, monkeypatch):
    """Fake docker, helm and kubectl (recording, failing on anything unexpected) and an allowed kube context."""
    from fakes import DIGEST, FakeTool

    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\ncurrent-context: lab\ncontexts: [{name: lab, context: {cluster: lab}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(kc))
    bin_dir = tmp_path / "bin"
    docker = FakeTool(bin_dir, "docker").expect("buildx", "build", write_metadata=DIGEST)
    helm = FakeTool(bin_dir, "helm").expect("version", "--short", stdout="v4.1.4+g1234567\n")
    helm.expect("upgrade", "--install", stdout="Release \"demo\" has been upgraded.\nREVISION: 7\n")
    helm.expect("template", stdout=RENDERED)  # what real Helm renders for the demo chart (no namespace set)
    helm.expect("status", stdout=HELM_STATUS)  # the live release is the one buildplane made (revision 7)
    kubectl = FakeTool(bin_dir, "kubectl").expect("get")  # read-only verbs only; anything else fails
    return {"bin": bin_dir, "docker": docker, "helm": helm, "kubectl": kubectl}
