"""Releases at the tool boundary: fake helm, kubectl and docker record argv and fail on unexpected calls."""
from __future__ import annotations

import json
from pathlib import Path
import os

import pytest

from buildplane.commands._output import outcome_lines
from buildplane.errors import Refused
from conftest import HELM_STATUS, RENDERED, run_process
from fakes import DIGEST, FakeTool, up


def upgrades(helm: FakeTool) -> list[list[str]]:
    return [c for c in helm.calls if c[:2] == ["upgrade", "--install"]]


def test_dev_release_exact_helm_argv(tools):
    summary = up(tools)
    assert summary.exit_code == 0, summary.error
    assert upgrades(tools["helm"]) == [[
        "upgrade", "--install", "demo-api", "chart", "--namespace", "demo-dev", "--kube-context", "lab",
        "-f", "chart/values-dev.yaml", "-f", ".buildplane/values/dev-api-image.json",
        "--wait", "--timeout", "5m", "--history-max", "10", "--rollback-on-failure",
    ]]
    # The image goes in a values file, never --set: a string cannot become another key there.
    assert json.loads(Path(".buildplane/values/dev-api-image.json").read_text()) == {
        "image": {"repository": "registry.example/team/demo-api", "digest": DIGEST}}
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
    assert lines == [f"api: build built, released into demo-staging (revision 7), smoke passed — "
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


def test_the_render_beside_the_build_is_the_release_with_the_pushed_digest(tools):
    """The render runs with a stand-in digest while the image is made; the release puts the pushed digest in
    its place — and renders again when the chart made something else of the stand-in."""
    from buildplane.steps.release import STAND_IN
    tools["helm"].rules.clear()
    tools["helm"].expect("version", "--short", stdout="v4.1.4+g1234567\n")
    tools["helm"].expect("template", stdout=RENDERED + f"  # image: registry.example/team/demo-api@{STAND_IN}\n")
    tools["helm"].expect("upgrade", "--install", stdout="REVISION: 7\n")
    tools["helm"].expect("status", stdout=HELM_STATUS)
    summary = up(tools)
    assert summary.exit_code == 0, summary.error
    templates = [c for c in tools["helm"].calls if c[:1] == ["template"]]
    assert len(templates) == 1 and templates[0][-1].endswith("dev-api-image-render.json")  # one render, the early one
    assert summary.result("render:api").duration_s > 0
    # A chart that shortens the digest: the stand-in shows through, so the release renders for real.
    Path("ctx/app.txt").write_text("v2\n")
    other = "sha256:" + "cd" * 32
    tools["docker"].rules.clear()
    tools["docker"].expect("buildx", "build", write_metadata=other)
    tools["helm"].rules.clear()
    tools["helm"].expect("version", "--short", stdout="v4.1.4+g1234567\n")
    tools["helm"].expect("template", stdout=RENDERED + f"  # short: {STAND_IN[:23]}\n")
    tools["helm"].expect("upgrade", "--install", stdout="REVISION: 8\n")
    tools["helm"].expect("status", stdout=HELM_STATUS)
    assert up(tools).exit_code == 0
    templates = [c for c in tools["helm"].calls if c[:1] == ["template"]]
    assert len(templates) == 3 and templates[-1][-1].endswith("dev-api-image.json")
    assert other in Path(".buildplane/values/dev-api-image.json").read_text() and DIGEST != other
