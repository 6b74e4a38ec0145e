"""The Docker config buildx gets for registries.auth, and its credential helper, run as buildx runs it:
the installed console script, a host on stdin, JSON on stdout."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from buildplane.tools.docker_config import with_tokens

HELPER = Path(sys.executable).parent / "docker-credential-buildplane-env"


def ask(env: dict, host: str) -> subprocess.CompletedProcess:
    if not HELPER.exists():
        pytest.fail(f"{HELPER} is missing: the package's console script (`make install`)")
    return subprocess.run([str(HELPER), "get"], input=host, env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture
def user_config(tmp_path):
    cfg = tmp_path / "user-docker"
    (cfg / "cli-plugins").mkdir(parents=True)
    auth = base64.b64encode(b"someone:their-password").decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {"other.example": {"auth": auth}}, "proxies": {"x": 1}}))
    return cfg


def test_without_a_set_token_buildx_keeps_the_users_config(user_config, tmp_path):
    env = {"DOCKER_CONFIG": str(user_config), "PATH": os.environ["PATH"]}
    assert with_tokens(env, {"ghcr.io": ("bot", "GHCR_TOKEN")}, tmp_path / "state") == env


def test_the_token_is_answered_from_the_environment_and_written_nowhere(user_config, tmp_path):
    env = {"DOCKER_CONFIG": str(user_config), "PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "GHCR_TOKEN": "ghp_secretvalue"}
    got = with_tokens(env, {"ghcr.io": ("bot", "GHCR_TOKEN")}, tmp_path / "state")
    made = Path(got["DOCKER_CONFIG"])
    cfg = json.loads((made / "config.json").read_text())
    assert cfg == {"proxies": {"x": 1}, "credsStore": "buildplane-env"}  # no auths: no secret of anyone's
    assert (made / "cli-plugins").resolve() == (user_config / "cli-plugins").resolve()
    assert all(b"ghp_secretvalue" not in p.read_bytes() and b"their-password" not in p.read_bytes()
               for p in made.rglob("*") if p.is_file())
    assert "ghp_secretvalue" not in got["BUILDPLANE_REGISTRY_TOKENS"]
    answer = ask(got, "ghcr.io")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == {"ServerURL": "ghcr.io", "Username": "bot", "Secret": "ghp_secretvalue"}
    other = ask(got, "https://other.example")  # any other host: the user's own credentials, as before
    assert json.loads(other.stdout)["Secret"] == "their-password"
    nobody = ask(got, "nowhere.example")
    assert nobody.returncode == 1 and "credentials not found" in nobody.stdout
