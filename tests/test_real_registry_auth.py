"""A registry token from the environment (`registries.auth`), on the lab's real builder and its
authenticating registry, with no `docker login`: buildplane's own pushes and buildx's (through the
package's credential helper) use it, and it is in no output and no file a run leaves."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_process
from lab import final_auth, lab_env, make_app, manifest_exists, process_env

pytestmark = pytest.mark.real


def app_with_token(tmp_path: Path, lab: dict) -> tuple[Path, dict, str]:
    """The example app with a token variable for the final registry, and a Docker config that holds
    the builder's plugin and builders but no credentials at all."""
    app, _ = make_app(tmp_path / "app", lab, cache=True)
    user, password = final_auth(lab)
    host = lab["final"].split("/", 1)[0]
    topo = app / "topology.yaml"
    topo.write_text(topo.read_text().replace(
        "  plain_http: [", f"  auth: {{\"{host}\": {{username: {user}, token_env: BP_LAB_TOKEN}}}}\n  plain_http: ["))
    bare = tmp_path / "docker-config"
    bare.mkdir()
    lab_cfg = Path(lab["DOCKER_CONFIG"])
    for name in ("cli-plugins", "buildx"):
        if (lab_cfg / name).exists():
            (bare / name).symlink_to(lab_cfg / name)
    (bare / "config.json").write_text("{}")
    return app, {"DOCKER_CONFIG": str(bare)}, password


def up(app: Path, lab: dict, mode: str, env: dict):
    res = run_process(["--topology", "topology.yaml", "up", "--mode", mode, "portal", "--build-only", "--json"],
                      cwd=app, env=process_env(lab, BUILDPLANE_WAIT_CACHE="true", **env), timeout=300)
    return res, (json.loads(res.out) if res.out.strip() else None)


@pytest.mark.parametrize("mode", ["dev", "staging"])  # dev: buildplane pushes the layout; staging: buildx pushes
def test_a_token_from_the_environment_pushes_without_docker_login(mode, tmp_path):
    lab = lab_env()
    app, env, token = app_with_token(tmp_path, lab)
    without = run_process(["--topology", "topology.yaml", "up", "--mode", mode, "portal", "--build-only"], cwd=app,
                          env=process_env(lab, **env), timeout=300)
    assert without.code != 0 and "BP_LAB_TOKEN" in without.err  # the sentence names the variable to set
    res, summary = up(app, lab, mode, {**env, "BP_LAB_TOKEN": token})
    assert res.code == 0, res.err[-3000:]
    portal = summary["targets"]["portal"]
    assert portal["build"] == "built"
    assert manifest_exists(portal["image"], auth=final_auth(lab))
    assert token not in res.out + res.err
    left = [p for p in app.rglob("*") if p.is_file() and not p.is_symlink() and "layouts" not in p.parts]
    assert left and [p for p in left if token.encode() in p.read_bytes()] == []
    assert json.loads((tmp_path / "docker-config/config.json").read_text()) == {}  # the user's, untouched


def test_a_wrong_token_is_one_line_naming_its_variable(tmp_path):
    lab = lab_env()
    app, env, _ = app_with_token(tmp_path, lab)
    res, _ = up(app, lab, "dev", {**env, "BP_LAB_TOKEN": "not-the-token"})
    assert res.code == 4, res.err
    assert "$BP_LAB_TOKEN" in res.err and "Traceback" not in res.err
    assert "not-the-token" not in res.out + res.err
