"""Registries off loopback, as a Nexus inside the cluster network is: real distribution registries in a
network namespace (tests/netns_registry.py), where BuildKit allows plain HTTP only when told and checks
every certificate. `up` in dev and staging with the registry cache on, on the lab's real builder."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from conftest import run_process
from lab import lab_env, make_app, process_env
from netns_registry import netns_registry

pytestmark = pytest.mark.real

ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


def app_on(tmp_path: Path, lab: dict, host: str, listed: bool) -> Path:
    """The example app with its final registry and its cache on `host`, listed in plain_http or not."""
    app, ns = make_app(tmp_path / "app", lab, final=f"{host}/offhost", cache=True)
    topo = app / "topology.yaml"
    text = topo.read_text().replace(f"{lab['cache']}/{ns}/buildcache", f"{host}/offhost/buildcache")
    if listed:
        text = text.replace("plain_http: [", f"plain_http: [{host}, ")
    topo.write_text(text)
    return app


def up(app: Path, lab: dict, mode: str):
    res = run_process(["--topology", "topology.yaml", "up", "--mode", mode, "portal", "--build-only", "--json"],
                      cwd=app, env=process_env(lab, BUILDPLANE_WAIT_CACHE="true"), timeout=300)
    return res, (json.loads(res.out) if res.out.strip() else None)


def has_manifest(host: str, ref_path: str, tag: str) -> bool:
    resp = httpx.get(f"http://{host}/v2/{ref_path}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=5)
    return resp.status_code == 200


def test_a_plain_http_registry_off_loopback_takes_dev_and_staging_with_the_cache(tmp_path):
    lab = lab_env()
    with netns_registry(tmp_path / "registry") as (host, _):
        app = app_on(tmp_path, lab, host, listed=True)
        for mode in ("dev", "staging"):  # dev: buildplane pushes the layout; staging: buildx pushes
            res, summary = up(app, lab, mode)
            assert res.code == 0, res.err[-3000:]
            portal = summary["targets"]["portal"]
            assert portal["build"] == "built" and portal["cache"]["export"]
            image = portal["image"].removeprefix(f"{host}/")
            repo, _, tag = image.rpartition(":")
            assert has_manifest(host, repo, tag)
            assert has_manifest(host, f"offhost/buildcache/{mode}/portal", "latest")  # the cache, through BuildKit


def test_a_plain_http_registry_not_listed_is_one_line_naming_the_fix(tmp_path):
    lab = lab_env()
    with netns_registry(tmp_path / "registry") as (host, _):
        res, _ = up(app_on(tmp_path, lab, host, listed=False), lab, "dev")
    assert res.code == 4, res.err[-2000:]
    last = res.err.strip().splitlines()[-1]
    assert f"registry {host} speaks plain HTTP" in last and "registries.plain_http" in last
    assert "Traceback" not in res.err


def test_a_registry_whose_certificate_is_not_trusted_is_one_line_naming_the_fix(tmp_path):
    lab = lab_env()
    with netns_registry(tmp_path / "registry", tls=True) as (host, ca):
        res, _ = up(app_on(tmp_path, lab, host, listed=False), lab, "dev")
    assert ca is not None
    assert res.code == 4, res.err[-2000:]
    last = res.err.strip().splitlines()[-1]
    assert f"registry {host}'s certificate is not trusted" in last and "trust store" in last
    assert "Traceback" not in res.err
