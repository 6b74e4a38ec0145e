"""The real build plane: buildx through the lab's registry cache, push, freshness (marker `real`)."""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import run_process
from lab import final_auth, lab_env, make_app, manifest_exists, process_env, prune_builder
from registry_proxy import RegistryProxy

pytestmark = pytest.mark.real
# Every manifest type a builder pushes (a dev image without attestation is a single Docker v2 manifest).
ACCEPT = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.docker.distribution.manifest.v2+json"])


def up(app: Path, lab: dict, *args: str, env: dict | None = None, timeout: float = 300):
    # The export inside the build unless a test says otherwise: these tests read the cache right after.
    res = run_process(["--topology", "topology.yaml", "up", "--mode", "dev", *args, "--json"], cwd=app,
                      env=env or process_env(lab, BUILDPLANE_WAIT_CACHE="true"), timeout=timeout)
    summary = json.loads(res.out) if res.out.strip() else None
    return res, summary


@pytest.fixture(scope="module")
def lab():
    return lab_env()


@pytest.fixture(scope="module")
def built(lab, tmp_path_factory):
    """One cold build of runtime + portal with cache export, shared by the tests below."""
    app, ns = make_app(tmp_path_factory.mktemp("app"), lab)
    started = time.monotonic()
    res, summary = up(app, lab)
    assert res.code == 0, res.err
    return {"app": app, "ns": ns, "summary": summary, "cold_s": time.monotonic() - started}


def test_cold_build_exports_cache_and_pushes_digest(lab, built):
    summary, app, ns = built["summary"], built["app"], built["ns"]
    for target in ("runtime", "portal"):
        t = summary["targets"][target]
        assert t["build"] == "built" and t["cache"]["export"] and t["cache"]["import"]
        # The cache registry has {cache}/{mode}/{target}.
        assert manifest_exists(f"{lab['cache']}/{ns}/buildcache/dev/{target}:latest")
        # The final registry has the tag, and its digest is the one from the metadata file.
        meta = json.loads((app / ".buildplane/builds" / f"dev-{target}.json").read_text())
        assert t["digest"] == meta["containerimage.digest"]
        assert manifest_exists(t["image"], final_auth(lab))
        repo_tag = t["image"].split("/", 1)[1]
        repo, tag = repo_tag.rsplit(":", 1)
        head = httpx.head(f"http://{lab['final']}/v2/{repo}/manifests/{tag}", auth=final_auth(lab), headers={
            "Accept": ACCEPT})
        assert head.headers["docker-content-digest"] == t["digest"]
    assert summary["targets"]["runtime"]["release"] == "rendered"
    rendered = (app / ".buildplane/rendered/dev-runtime.yaml").read_text()
    assert summary["targets"]["runtime"]["digest"] in rendered  # the release pins the pushed digest


def test_noop_up_calls_no_buildx(lab, built, tmp_path):
    # A recording `docker` in front of the real one: any buildx call would be logged.
    calls = tmp_path / "docker-calls.log"
    shim = tmp_path / "bin" / "docker"
    shim.parent.mkdir()
    real = "/usr/local/bin/docker" if Path("/usr/local/bin/docker").exists() else "/usr/bin/docker"
    shim.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = process_env(lab)
    env["PATH"] = f"{shim.parent}:{env['PATH']}"
    res, summary = up(built["app"], lab, env=env)
    assert res.code == 0, res.err
    assert {t["build"] for t in summary["targets"].values()} == {"fresh"}
    assert {t["release"] for t in summary["targets"].values()} == {"fresh"}
    assert not calls.exists() or "buildx" not in calls.read_text()
    # Positive control: through the same shim, a forced run's build is recorded, so the shim is on the path.
    res, summary = up(built["app"], lab, "--force", "portal", env=env)
    assert res.code == 0, res.err
    assert summary["targets"]["portal"]["build"] == "built"
    assert "buildx build" in calls.read_text()


def test_edit_one_portal_file_rebuilds_portal_only(lab, built):
    page = built["app"] / "examples/fractalops/portal/www/index.html"
    page.write_text(page.read_text().replace("portal is up", "portal is up (edited)"))
    res, summary = up(built["app"], lab, "--rebuild")  # the page is inside portal's sync rule: a build asked for
    assert res.code == 0, res.err
    assert summary["targets"]["portal"]["build"] == "built"
    assert "www/index.html changed" in summary["targets"]["portal"]["reason"]
    assert summary["targets"]["runtime"]["build"] == "fresh"


def test_rebuild_after_prune_takes_every_step_from_the_cache(lab, built):
    prune_builder(lab)
    started = time.monotonic()
    res, summary = up(built["app"], lab, "runtime", "--force")
    warm_s = time.monotonic() - started
    assert res.code == 0, res.err
    cache = summary["targets"]["runtime"]["cache"]
    assert cache["total_steps"] >= 2 and cache["cached_steps"] == cache["total_steps"], cache
    assert warm_s < built["cold_s"], (warm_s, built["cold_s"])


def test_wrong_credentials_fail_fast_and_push_nothing(lab, tmp_path):
    app, ns = make_app(tmp_path / "app", lab)
    cfg = tmp_path / "docker-config"
    (cfg / "cli-plugins").mkdir(parents=True)
    os.symlink(Path(lab["DOCKER_CONFIG"]) / "cli-plugins/docker-buildx", cfg / "cli-plugins/docker-buildx")
    import base64
    bad_secret = "wrong-pa55word-XYZ"
    (cfg / "config.json").write_text(json.dumps({"auths": {lab["final"]: {
        "auth": base64.b64encode(f"buildplane:{bad_secret}".encode()).decode()}}}))
    res, _ = up(app, lab, env=process_env(lab, DOCKER_CONFIG=str(cfg)))
    assert res.code in (1, 4), res.err
    last = res.err.strip().splitlines()[-1]
    assert lab["final"] in last and "401" in last
    assert bad_secret not in res.err + res.out
    assert base64.b64encode(f"buildplane:{bad_secret}".encode()).decode() not in res.err + res.out
    for target in ("runtime", "portal"):
        assert not manifest_exists(f"{lab['cache']}/{ns}/buildcache/dev/{target}:latest")


def test_registry_down_is_a_clear_error_without_a_hang(lab, tmp_path):
    app, _ = make_app(tmp_path / "app", lab, final="127.0.0.1:1/nothing")
    started = time.monotonic()
    res, _ = up(app, lab, timeout=60)
    assert res.code == 4, res.err
    assert "127.0.0.1:1" in res.err and "does not answer" in res.err
    assert time.monotonic() - started < 20


def test_blackholed_registry_times_out(lab, tmp_path):
    # Accepts connections and never answers: the HEAD must give up at its timeout.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    try:
        app, _ = make_app(tmp_path / "app", lab, final=f"127.0.0.1:{port}/blackhole")
        started = time.monotonic()
        res, _ = up(app, lab, timeout=60)
        assert res.code == 4, res.err
        assert f"127.0.0.1:{port}" in res.err and "did not answer within" in res.err
        assert time.monotonic() - started < 30
    finally:
        stop.set()
        for c in held:
            c.close()
        srv.close()


def unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def _tags_of(seen, verb="PUT") -> list[str]:
    return [path.rsplit("/manifests/", 1)[1] for method, path, status in seen
            if method == verb and "/manifests/" in path and status in (200, 201) and "/manifests/sha256:" not in path]


def _uploaded(seen) -> list[str]:
    """The digest of every blob upload the registry completed (PUT …/blobs/uploads/…?digest=, or a single POST)."""
    return [re.search(r"digest=(sha256(?::|%3A)[0-9a-f]{64})", path).group(1).replace("%3A", ":")
            for method, path, status in seen if status == 201 and "/blobs/uploads/" in path and "digest=" in path]


def test_one_push_per_image_both_tags_at_once_and_an_edit_sends_only_what_changed(lab, tmp_path):
    """The lab's builder is on this machine: it writes the image as an OCI layout and buildplane pushes it,
    each blob once, the manifest under the content tag and the mode tag (one PUT each, one digest). The
    edit's push sends the new layer and config only, and asks nothing about the blobs the last push put there."""
    with RegistryProxy(lab["final"], auth=final_auth(lab)) as proxy:
        repo = f"{unique()}/fractalops-portal"
        app, _ = make_app(tmp_path / "app", lab, final=f"{proxy.address}/{repo.split('/')[0]}", cache=False)
        res, summary = up(app, lab, "portal")
        assert res.code == 0, res.err
        first = list(proxy.seen)
        page = app / "examples/fractalops/portal/www/index.html"
        page.write_text(page.read_text() + "<!-- one more line -->\n")
        proxy.seen.clear()
        res, edited = up(app, lab, "portal", "--rebuild")  # the build path (the page is inside a sync rule)
        assert res.code == 0, res.err
        second = list(proxy.seen)
    t = summary["targets"]["portal"]
    assert t["push"] == "layout" and edited["targets"]["portal"]["push"] == "layout"
    mode_tag = t["image"].rsplit(":", 1)[1]
    put = _tags_of(first)
    assert sorted(put) == sorted([mode_tag, next(p for p in put if p.startswith("bp-"))]), put
    manifest = httpx.get(f"http://{lab['final']}/v2/{repo}/manifests/{t['digest']}", auth=final_auth(lab),
                         headers={"Accept": ACCEPT})
    blobs = [manifest.json()["config"]["digest"], *(layer["digest"] for layer in manifest.json()["layers"])]
    assert sorted(_uploaded(first)) == sorted(blobs)  # every blob once, nothing twice
    content = next(p for p in put if p.startswith("bp-"))  # the first image's content tag keeps its digest
    head = httpx.head(f"http://{lab['final']}/v2/{repo}/manifests/{content}", auth=final_auth(lab),
                      headers={"Accept": ACCEPT})
    assert head.status_code == 200 and head.headers["docker-content-digest"] == t["digest"]
    assert [p for m, p, _ in first if m == "PUT" and p.endswith(f"/manifests/{mode_tag}")]

    after = httpx.get(f"http://{lab['final']}/v2/{repo}/manifests/{edited['targets']['portal']['digest']}",
                      auth=final_auth(lab),
                      headers={"Accept": ACCEPT}).json()
    new_blobs = {after["config"]["digest"], *(layer["digest"] for layer in after["layers"])} - set(blobs)
    assert len(new_blobs) == 2 and set(_uploaded(second)) == new_blobs  # the edited layer and the config
    assert not [path for method, path, _ in second if method == "HEAD" and "/blobs/" in path]
    assert len(_tags_of(second)) == 2 and not [m for m, path, _ in second if m == "GET" and "/manifests/" in path]
    layout = app / ".buildplane/layouts/dev-portal/blobs/sha256"
    assert sorted(f"sha256:{p.name}" for p in layout.iterdir()) == sorted(
        [edited["targets"]["portal"]["digest"], after["config"]["digest"], *(x["digest"] for x in after["layers"])])


def test_a_registry_500_during_the_push_is_retried(lab, tmp_path):
    # BuildKit tries a manifest PUT 4 times itself; a fifth 500 would be the registry still failing.
    with RegistryProxy(lab["final"], auth=final_auth(lab)) as proxy:
        proxy.fail("PUT", r"/manifests/bp-", 500, times=4)
        app, _ = make_app(tmp_path / "app", lab, final=f"{proxy.address}/{unique()}", cache=False)
        res, summary = up(app, lab, "portal")
    assert res.code == 0, res.err
    assert f"registry {proxy.address} answered 500 Internal Server Error during the push; trying again" in res.err
    assert summary["targets"]["portal"]["build"] == "built"


def test_a_registry_that_keeps_failing_the_push_is_named_with_its_status(lab, tmp_path):
    with RegistryProxy(lab["final"], auth=final_auth(lab)) as proxy:
        proxy.fail("PUT", r"/manifests/bp-", 503, times=100)
        app, _ = make_app(tmp_path / "app", lab, final=f"{proxy.address}/{unique()}", cache=False)
        res, summary = up(app, lab, "portal")
    assert res.code == 1, res.err
    last = res.err.strip().splitlines()[-1]
    assert f"the push to registry {proxy.address} failed 3 times, last with 503 Service Unavailable" in last
    assert summary["targets"]["portal"]["build"] == "failed"


def test_a_build_printing_non_utf8_output_succeeds_on_the_lab_builder(lab, tmp_path):
    """`RUN printf 'caf\\351'` plus more than a pipe buffer of output: the line reader keeps going (#15.1)."""
    app, _ = make_app(tmp_path / "app", lab, cache=False)
    dockerfile = app / "examples/fractalops/portal/Dockerfile"
    text = dockerfile.read_text().replace(
        "COPY www /srv/www", "RUN printf 'caf\\351\\n' && head -c 200000 /dev/zero | tr '\\\\0' 'x' | fold -w 100\n"
                            "COPY www /srv/www")
    dockerfile.write_text(text)
    started = time.monotonic()
    res, summary = up(app, lab, "portal", "--build-only", env={**process_env(lab), "BUILDKIT_PROGRESS": "plain"},
                      timeout=300)
    assert res.code == 0, res.err[-2000:]
    assert time.monotonic() - started < 240
    assert summary["targets"]["portal"]["build"] == "built" and "Traceback" not in res.err


def test_dev_exports_the_cache_in_the_background_and_the_next_machine_uses_it(lab, tmp_path, monkeypatch):
    """The dev default on the real builder: the push does not wait for the export; the export ends
    recorded (and evented); after a prune an edit's build takes its slow step from that cache. The dev
    image is one manifest (no attestation manifest to push)."""
    app, ns = make_app(tmp_path / "app", lab)
    monkeypatch.delenv("BUILDPLANE_WAIT_CACHE")  # the dev default, as a developer's shell has it
    monkeypatch.delenv("CI", raising=False)
    env = process_env(lab)
    res, summary = up(app, lab, "portal", env=env)
    assert res.code == 0, res.err
    assert summary["targets"]["portal"]["cache_export"]["when"] == "background"
    record_path = app / ".buildplane/state/cache-export-dev-portal.json"
    deadline = time.monotonic() + 120
    while json.loads(record_path.read_text())["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    record = json.loads(record_path.read_text())
    assert record["status"] == "succeeded", record
    assert manifest_exists(f"{lab['cache']}/{ns}/buildcache/dev/portal:latest")
    events = [json.loads(line) for line in (app / ".buildplane/events.jsonl").read_text().splitlines()]
    assert any(e["name"] == "cache.export" and e["attributes"]["cicd.pipeline.task.run.result"] == "success"
               for e in events)
    image = summary["targets"]["portal"]["image"]
    repo, tag = image.split("/", 1)[1].rsplit(":", 1)
    got = httpx.get(f"http://{lab['final']}/v2/{repo}/manifests/{tag}", auth=final_auth(lab), headers={"Accept": ACCEPT})
    assert got.json()["mediaType"] in ("application/vnd.oci.image.manifest.v1+json",
                                       "application/vnd.docker.distribution.manifest.v2+json")  # not an index
    prune_builder(lab)
    page = app / "examples/fractalops/portal/www/index.html"
    page.write_text(page.read_text() + "<!-- after the prune -->\n")
    res, summary = up(app, lab, "portal", "--rebuild", env=env)
    assert res.code == 0, res.err
    cache = summary["targets"]["portal"]["cache"]
    assert cache["cached_steps"] >= 1, cache  # the slow RUN came from the background export
    json.loads((app / ".buildplane/state/build-dev-portal.json").read_text())
    deadline = time.monotonic() + 120  # leave no export running behind the test
    while json.loads(record_path.read_text())["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
