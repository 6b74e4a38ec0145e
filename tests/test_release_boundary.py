"""Releases at the tool boundary: fake helm, kubectl and docker record argv and fail on unexpected calls."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from buildplane.commands import outcome_lines
from buildplane.engine import Engine
from buildplane.errors import Refused
from buildplane.plan import Options, make_plan
from buildplane.steps.build import BuildEnv
from buildplane.steps.release import ReleaseEnv
from buildplane.tools import helm as helm_tool
from buildplane.tools.registry import RegistryClient
from buildplane.tools.run import Runner
from buildplane.topology import load
from conftest import run_process
from fakes import FakeTool
from test_build_boundary import DIGEST, registry_stub


@pytest.fixture
def tools(workspace, tmp_path, monkeypatch):
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\ncurrent-context: lab\ncontexts: [{name: lab, context: {cluster: lab}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(kc))
    helm_tool._cache.clear()
    bin_dir = tmp_path / "bin"
    docker = FakeTool(bin_dir, "docker").expect("buildx", "build", write_metadata=DIGEST)
    helm = FakeTool(bin_dir, "helm").expect("version", "--short", stdout="v4.1.4+g1234567\n")
    helm.expect("upgrade", "--install", stdout="Release \"demo\" has been upgraded.\nREVISION: 7\n")
    kubectl = FakeTool(bin_dir, "kubectl").expect("get")  # read-only verbs only; anything else fails
    return {"bin": bin_dir, "docker": docker, "helm": helm, "kubectl": kubectl}


def up(tools, *, mode="dev", targets=("api",), apply=False, force=False, namespace=None, reporter=None, smoke_runner=None,
       build_only=False):
    topo = load("topology.yaml")
    runner = Runner(extra_path=[str(tools["bin"])])
    plan = make_plan(topo, Options(mode=mode, targets=targets, apply=apply, force=force, namespace=namespace,
                                   build_only=build_only), runner=runner)
    client, _ = registry_stub(set())
    env = BuildEnv(runner=runner, registry=RegistryClient(client=client), state_dir=Path(".buildplane"), log=lambda m: None,
                   force=force)
    env._cache_ok = True
    eng = Engine(plan, build_env=env, release_env=ReleaseEnv(runner, Path(".buildplane"), lambda m: None, force=force),
                 state_dir=Path(".buildplane"), log=lambda m: None, reporter=reporter, smoke_runner=smoke_runner)
    return eng.run()


def upgrades(helm: FakeTool) -> list[list[str]]:
    return [c for c in helm.calls if c[:2] == ["upgrade", "--install"]]


def test_dev_release_exact_helm_argv(tools):
    summary = up(tools)
    assert summary.exit_code == 0, summary.error
    assert upgrades(tools["helm"]) == [[
        "upgrade", "--install", "demo-api", "chart", "--namespace", "demo-dev", "--kube-context", "lab",
        "-f", "chart/values-dev.yaml", "--set", "image.repository=registry.example/team/demo-api",
        "--set", f"image.digest={DIGEST}", "--wait", "--timeout", "5m", "--history-max", "10", "--rollback-on-failure",
    ]]
    t = summary.to_json()["targets"]["api"]
    assert t["release"] == "applied" and t["revision"] == 7
    for tool in tools.values():
        if isinstance(tool, FakeTool):
            assert tool.unexpected() == []
    assert tools["kubectl"].calls == []


def test_staging_apply_releases_into_the_staging_namespace(tools):
    summary = up(tools, mode="staging", apply=True)
    assert summary.exit_code == 0, summary.error
    argv = upgrades(tools["helm"])[0]
    assert argv[argv.index("--namespace") + 1] == "demo-staging"


def test_staging_without_apply_calls_no_helm(tools):
    assert up(tools, mode="staging", targets=()).exit_code == 0
    assert upgrades(tools["helm"]) == []
    assert up(tools, mode="staging", build_only=True).exit_code == 0
    assert upgrades(tools["helm"]) == []


def test_staging_named_target_releases_with_staging_values_and_says_so(tools, workspace):
    (workspace / "chart/values-staging.yaml").write_text("replicas: 2\n")
    text = (workspace / "topology.yaml").read_text().replace(
        "values: [chart/values-dev.yaml]", "values: [chart/values-dev.yaml]\n    mode_values: {staging: [chart/values-staging.yaml]}")
    (workspace / "topology.yaml").write_text(text)
    env = {"PATH": f"{tools['bin']}:{os.environ['PATH']}", "KUBECONFIG": os.environ["KUBECONFIG"],
           "BUILDPLANE_STATE_DIR": str(workspace / "state")}
    # The registry is down here, so the build fails fast; the plan and the refusal are what matter.
    plan = run_process(["--topology", "topology.yaml", "plan", "--mode", "staging", "api", "--json"], workspace, env)
    release = next(s for s in json.loads(plan.out)["steps"] if s["kind"] == "release")
    assert release["argv"][:4] == ["helm", "upgrade", "--install", "demo-api"]
    assert release["argv"][release["argv"].index("--namespace") + 1] == "demo-staging"
    assert "chart/values-staging.yaml" in release["argv"] and "chart/values-dev.yaml" not in release["argv"]
    summary = up(tools, mode="staging")
    assert summary.exit_code == 0, summary.error
    assert upgrades(tools["helm"])[0][4:6] == ["--namespace", "demo-staging"]
    lines = outcome_lines(summary.to_json(), "demo-staging")
    assert lines == [f"api: build built, released into demo-staging (revision 7), smoke skipped — "
                     f"{summary.to_json()['targets']['api']['image']}"]


def test_second_identical_up_calls_no_helm_upgrade(tools):
    assert up(tools).exit_code == 0
    assert len(upgrades(tools["helm"])) == 1
    second = up(tools)
    assert second.exit_code == 0
    assert len(upgrades(tools["helm"])) == 1
    assert second.to_json()["targets"]["api"]["release"] == "fresh"


def test_values_edit_releases_again(tools, workspace):
    assert up(tools).exit_code == 0
    (workspace / "chart/values-dev.yaml").write_text("replicas: 2\n")
    assert up(tools).exit_code == 0
    assert len(upgrades(tools["helm"])) == 2


def test_helm3_gets_atomic(tools):
    tools["helm"].rules[0]["stdout"] = "v3.15.2+g1a500d5\n"
    tools["helm"]._save()
    assert up(tools).exit_code == 0
    assert upgrades(tools["helm"])[0][-1] == "--atomic"


def test_failed_build_never_releases(tools):
    tools["docker"].rules[0] = {"prefix": ["buildx", "build"], "exit": 1, "stderr": "ERROR: failed to solve\n"}
    tools["docker"]._save()
    summary = up(tools)
    assert summary.exit_code == 1
    assert upgrades(tools["helm"]) == []
    assert summary.to_json()["targets"]["api"]["release"] == "not-run"


@pytest.mark.parametrize("kwargs,rule", [({"namespace": "prod"}, "protected-namespace"),
                                         ({"namespace": "elsewhere"}, "mode-namespace")])
def test_guard_refusal_calls_no_tool(tools, kwargs, rule):
    with pytest.raises(Refused) as err:
        up(tools, **kwargs)
    assert err.value.rule == rule
    for name in ("docker", "helm", "kubectl"):
        assert tools[name].calls == [], name


def test_context_outside_allow_list_calls_no_tool(tools, monkeypatch):
    monkeypatch.setenv("BUILDPLANE_KUBE_CONTEXT", "prod")
    with pytest.raises(Refused):
        up(tools)
    assert all(tools[n].calls == [] for n in ("docker", "helm", "kubectl"))
