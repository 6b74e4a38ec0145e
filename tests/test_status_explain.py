"""`status` (does what runs match the working tree?) and `explain` (which path a change takes)."""
from __future__ import annotations

import json
from pathlib import Path

from fakes import up

from buildplane.commands.status import status
from buildplane.state import StateDir
from buildplane.topology import load


def states(cwd=".") -> dict:
    topo = load("topology.yaml")
    return {s.target: s for s in status(topo, "dev", list(topo.targets), Path(cwd), StateDir(Path(".buildplane")))}


def test_never_released_then_in_sync(tools):
    before = states()
    assert before["api"].state == "never-released" and "buildplane up --mode dev api" in before["api"].sentence
    assert before["web"].state == "no-chart"
    assert up(tools).exit_code == 0
    after = states()["api"]
    assert after.state == "in-sync", after.sentence
    assert after.revision == 7 and "demo-dev on lab" in after.sentence


def test_source_edit_has_not_reached_the_cluster(tools):
    assert up(tools).exit_code == 0
    Path("ctx/app.txt").write_text("v2\n")
    s = states()["api"]
    assert s.state == "drifted"
    assert s.sentence.startswith("your edits have not reached the cluster: ctx/app.txt changed since the last release")
    assert s.changed == ("ctx/app.txt",)
    assert up(tools).exit_code == 0  # releasing it brings them back in line
    assert states()["api"].state == "in-sync"


def test_values_edit_is_named(tools):
    assert up(tools).exit_code == 0
    Path("chart/values-dev.yaml").write_text("replicas: 2\n")
    s = states()["api"]
    assert s.state == "drifted" and "chart/values-dev.yaml" in s.sentence


def test_rendered_release_is_not_called_running(workspace, tools, monkeypatch):
    monkeypatch.delenv("KUBECONFIG")  # no kube context: the release is rendered
    monkeypatch.setenv("KUBECONFIG", str(workspace / "none"))
    tools["helm"].expect("template", stdout="kind: Deployment\n")
    assert up(tools).exit_code == 0
    s = states()["api"]
    assert s.state == "rendered" and "is not running anywhere" in s.sentence


def test_status_cli_json(workspace, run_cli):
    res = run_cli("--topology", "topology.yaml", "status", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["targets"]["api"]["state"] == "never-released" and doc["targets"]["web"]["state"] == "no-chart"


def test_explain_change_paths(workspace, run_cli):
    Path("ctx/.dockerignore").write_text("docs\n")
    Path("README.md").write_text("hi\n")
    res = run_cli("--topology", "topology.yaml", "explain", "ctx/app.txt", "chart/values-dev.yaml", "README.md",
                  "ctx/docs/guide.md", "ctx/Dockerfile", "--json")
    assert res.code == 0, res.err
    by = {p["path"]: p for p in json.loads(res.out)["paths"]}
    assert by["ctx/app.txt"]["outcome"] == "rebuild + release"
    assert set(by["ctx/app.txt"]["targets"]) == {"api", "web"}
    assert "no chart" in by["ctx/app.txt"]["targets"]["web"]
    assert by["chart/values-dev.yaml"] == {"path": "chart/values-dev.yaml", "outcome": "release only",
                                           "targets": {"api": "in its chart chart"}, "notes": []}
    assert by["README.md"]["outcome"] == "nothing"
    assert by["ctx/docs/guide.md"]["outcome"] == "nothing"
    assert "excluded from api's build context by .dockerignore" in by["ctx/docs/guide.md"]["notes"]
    assert by["ctx/Dockerfile"]["targets"]["api"] == "its Dockerfile"
    text = run_cli("--topology", "topology.yaml", "explain", "README.md").out
    assert text == "README.md: nothing — outside every build context, chart and values file\n"


def test_a_file_name_that_is_not_utf8_is_hashed_as_its_bytes_and_shown_escaped(tools, run_cli):
    """buildx takes such a context; so does every command (it crashed all of them at the digest)."""
    import os as _os
    name = _os.fsdecode(b"ctx/caf\xe9.txt")
    Path(name).write_text("x\n")
    res = run_cli("--topology", "topology.yaml", "plan", "--mode", "dev", "api")
    assert res.code == 0, res.err
    explained = run_cli("--topology", "topology.yaml", "explain", name)
    assert explained.code == 0, explained.err
    assert "caf\\xe9.txt" in explained.out
    from buildplane.freshness import StatCache, image_inputs
    from buildplane.freshness.dockerignore import DockerIgnore  # noqa: F401 - the walk's own rules
    cache = StatCache.open(Path(".buildplane/state/stat-cache.json"))
    first = image_inputs(Path("ctx"), Path("ctx/Dockerfile"), build_args={}, build_target=None, platform=None, cache=cache)
    Path(name).write_text("y\n")
    second = image_inputs(Path("ctx"), Path("ctx/Dockerfile"), build_args={}, build_target=None, platform=None, cache=cache)
    assert first.digest != second.digest
