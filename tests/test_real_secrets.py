"""A `${VAR}` build arg's value stays out of every file a run leaves, on the lab's real builder: buildx's
metadata file would record it as provenance (`build-arg:NPM_TOKEN`) even with --provenance=false."""
from __future__ import annotations

import stat

import pytest

from lab import lab_env, make_app, process_env
from test_real_build import up

pytestmark = pytest.mark.real


def test_a_secret_build_arg_is_in_no_file_the_run_leaves(tmp_path):
    lab = lab_env()
    app, _ = make_app(tmp_path / "app", lab, cache=False)
    topo = app / "topology.yaml"
    topo.write_text(topo.read_text().replace("    image: fractalops-portal\n",
                                             "    image: fractalops-portal\n    build_args: {NPM_TOKEN: \"${NPM_TOKEN}\"}\n"))
    dockerfile = app / "examples/fractalops/portal/Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("FROM ${BASE_REGISTRY}/library/busybox:1.35",
                                                         "FROM ${BASE_REGISTRY}/library/busybox:1.35\nARG NPM_TOKEN"))
    secret = "npm_s3cr3tTOKENvalue42"
    res, summary = up(app, lab, "portal", "--build-only", env=process_env(lab, NPM_TOKEN=secret,
                                                                          BUILDPLANE_WAIT_CACHE="true"))
    assert res.code == 0, res.err
    assert secret not in res.out + res.err
    # Every file buildplane or a tool writes for it. The image's own blobs (the layout) are the image: BuildKit
    # records a build arg in the history of each RUN after its ARG, which the plan says in a note.
    files = [p for p in (app / ".buildplane").rglob("*") if p.is_file() and "layouts" not in p.parts]
    assert files and [p for p in files if secret.encode() in p.read_bytes()] == []
    from conftest import run_process
    plan = run_process(["--topology", "topology.yaml", "plan", "--mode", "dev", "portal"], cwd=app,
                       env=process_env(lab, NPM_TOKEN=secret))
    assert "portal: build arg NPM_TOKEN from the environment" in plan.out and "BuildKit secret" in plan.out
    assert secret not in plan.out
    meta = app / ".buildplane/builds/dev-portal.json"
    assert meta.is_file() and "containerimage.digest" in meta.read_text()
    assert "build-arg" not in meta.read_text()  # no provenance in it at all
    loose = [p for p in (app / ".buildplane/state").rglob("*.json")
             if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert loose == []
