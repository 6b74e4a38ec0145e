"""Hostile answers and leaks (#15): registries, Argo CD behind a proxy, files that vanish, a step that
crashes, secrets in every output, base images whose tags move. Each at its I/O seam."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import httpx
import pytest

from buildplane.errors import BadInput, Missing, StepFailed
from buildplane.freshness import StatCache, image_inputs
from buildplane.freshness.bases import BaseDigests, external_bases, registry_ref
from buildplane.steps.base import Status
from buildplane.telemetry.events import redact
from buildplane.tools.argocd import ArgoClient
from buildplane.tools.registry import RegistryClient, credentials_for, plain_http_host
from buildplane.topology import load
from conftest import run_process
from fakes import DIGEST, FakeTool, up


# ---- registries ---------------------------------------------------------------------------------------

def _registry(handler) -> RegistryClient:
    return RegistryClient(client=httpx.Client(transport=httpx.MockTransport(handler)), environ={"HOME": "/nonexistent"},
                          sleep=lambda s: None)


def test_bearer_challenge_without_realm_is_a_named_failure():
    client = _registry(lambda req: httpx.Response(401, headers={"www-authenticate": 'Bearer service="reg"'}))
    with pytest.raises(StepFailed, match="Bearer token without a usable realm"):
        client.manifest_digest("reg.example/team/app:1")


def test_token_service_answering_html_is_a_named_failure():
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.host == "auth.example":
            return httpx.Response(200, text="<html>login</html>", headers={"content-type": "text/html"})
        return httpx.Response(401, headers={"www-authenticate": 'Bearer realm="https://auth.example/token",service="r"'})
    with pytest.raises(StepFailed, match="answered text/html, not a JSON token"):
        _registry(handler).manifest_digest("reg.example/team/app:1")


@pytest.mark.parametrize("auth", ["%%%not-base64", base64.b64encode(b"no-colon").decode(), base64.b64encode(b"\xff\xfe:x").decode()])
def test_a_bad_auth_entry_in_the_docker_config_names_the_file(tmp_path, auth):
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"reg.example": {"auth": auth}}}))
    with pytest.raises(BadInput, match=r"config.json: auths.reg.example.auth is not base64 of `user:password`"):
        credentials_for("reg.example", {"DOCKER_CONFIG": str(tmp_path)})


def test_a_5xx_is_retried_then_exit_1_not_4():
    calls = []

    def handler(req):
        calls.append(req.method)
        return httpx.Response(503)
    with pytest.raises(StepFailed) as exc:
        _registry(handler).manifest_digest("reg.example/team/app:1")
    assert len(calls) == 3 and exc.value.exit_code == 1 and "503" in exc.value.message


@pytest.mark.parametrize("host,plain", [("localhost:5000", True), ("127.0.0.1:15001", True), ("[::1]:5000", True),
                                        ("localhost.corp.example", False), ("127.example.com", False),
                                        ("cache.example:8082", True), ("cache.example:8083", False),
                                        ("cache.example", False)])
def test_plain_http_matches_hosts_exactly(host, plain):
    assert plain_http_host(host, frozenset({"cache.example:8082"})) is plain


# ---- Argo CD behind an SSO proxy -----------------------------------------------------------------------

@pytest.mark.parametrize("response,needle", [
    (httpx.Response(200, text="<!doctype html><title>Sign in</title>", headers={"content-type": "text/html"}),
     "answered 200 with text/html, not Argo CD's JSON"),
    (httpx.Response(302, headers={"location": "https://sso.example/login"}), "redirected to https://sso.example/login"),
])
def test_argo_behind_an_sso_proxy_is_one_clear_line(response, needle):
    client = ArgoClient("https://argocd.example", environ={"ARGOCD_AUTH_TOKEN": "t0ken-value"},
                        client=httpx.Client(transport=httpx.MockTransport(lambda req: response)), sleep=lambda s: None)
    with pytest.raises(Missing) as exc:
        client.get_app("fractalops-runtime")
    assert needle in exc.value.message and "t0ken-value" not in exc.value.message


# ---- files that vanish, state that cannot be written, foreign event lines --------------------------------

def test_a_file_deleted_while_it_is_hashed_is_simply_not_an_input(tmp_path, monkeypatch):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    for i in range(5):
        (tmp_path / f"f{i}.txt").write_text(str(i))
    cache = StatCache(tmp_path / "cache.json")
    real = cache.file_hash

    def vanishing(abspath, st):
        if abspath.endswith("f3.txt"):
            os.unlink(abspath)  # an editor's temp file, gone between the listing and the read
        return real(abspath, st)
    monkeypatch.setattr(cache, "file_hash", vanishing)
    inputs = image_inputs(tmp_path, tmp_path / "Dockerfile", build_args={}, build_target=None, platform=None, cache=cache)
    assert "f3.txt" not in inputs.files and "f4.txt" in inputs.files


def test_plan_writes_nothing_and_works_with_an_unwritable_state_dir(workspace):
    os.chmod(workspace, 0o555)  # nothing can be created in the workspace
    try:
        res = run_process(["--topology", "topology.yaml", "plan", "--mode", "dev", "--build-only"], cwd=workspace,
                          env={"BUILDPLANE_STATE_DIR": str(workspace / ".state")})
    finally:
        os.chmod(workspace, 0o755)
    if os.geteuid() == 0:  # root writes anyway: then check that plan did not
        assert not (workspace / ".state").exists()
    assert res.code == 0 and "docker buildx build" in res.out, res.err


def test_foreign_lines_in_the_events_file_are_skipped(workspace, run_cli):
    events = workspace / ".buildplane" / "events.jsonl"
    events.parent.mkdir()
    good = {"time_unix_nano": 1_700_000_000_000_000_000, "name": "run.started", "attributes": {"cicd.pipeline.name": "x"}}
    events.write_text("\n".join([json.dumps(good), "not json", "[1,2]", json.dumps({"time_unix_nano": "soon", "name": 1,
                                 "attributes": {}}), json.dumps({"name": "x", "attributes": []}), "\xff\xfe"]) + "\n")
    res = run_cli("events", "tail", "--json")
    assert res.code == 0 and [json.loads(x)["name"] for x in res.out.splitlines()] == ["run.started"]
    assert run_cli("events", "stats").code == 0


# ---- a step that crashes --------------------------------------------------------------------------------

class _Recorder:
    def __init__(self):
        self.finished = None

    def run_started(self, *a): ...
    def step_started(self, *a): ...
    def step_finished(self, *a): ...

    def run_finished(self, summary):
        self.finished = summary


def test_a_crashing_step_is_one_failed_step_and_the_run_still_finishes(tools, monkeypatch):
    from buildplane.steps.build import BuildStep

    def boom(self, ctx):
        raise KeyError("realm")
    monkeypatch.setattr(BuildStep, "run", boom)
    recorder = _Recorder()
    summary = up(tools, reporter=recorder)
    assert recorder.finished is summary  # run.finished is emitted
    assert summary.exit_code == 1 and "build:api: internal error: KeyError" in summary.error
    assert summary.results["release:api"].status == Status.NOT_RUN


def test_an_unexpected_exception_in_a_command_is_one_line_not_a_traceback(workspace, run_cli, monkeypatch):
    """A bug in a command (here: explain raising a bare KeyError) is one masked line and exit 1."""
    from buildplane import cli

    def broken(args, topology):
        raise KeyError("token=abc123 in a place nobody foresaw")
    monkeypatch.setattr(cli, "command", lambda name: broken)
    monkeypatch.delenv("BUILDPLANE_DEBUG", raising=False)
    res = run_cli("--topology", "topology.yaml", "explain", "ctx/app.txt")
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 1 and "Traceback" not in res.err
    assert lines[0].startswith("buildplane: internal error: KeyError:") and "BUILDPLANE_DEBUG=1" in lines[0]
    assert "abc123" not in res.err


# ---- secrets never leave the process ---------------------------------------------------------------------

@pytest.mark.parametrize("text,secret", [
    ("https://ch.example/?access_token=abc123def", "abc123def"), ("refresh_token: r3fr3sh-v", "r3fr3sh-v"),
    ("client_secret: cl1ent-s", "cl1ent-s"), ("AWS_SECRET_ACCESS_KEY=AKIAxyz123", "AKIAxyz123"),
    ('{"password": "x1y2z3"}', "x1y2z3"), ('"auth": "dXNlcjpwYXNz"', "dXNlcjpwYXNz"),
    ("X-ClickHouse-Key: chpass99", "chpass99"), ("docker login -p hunter2 reg", "hunter2"),
    ("--password=hunter3", "hunter3"), ("user:pa55word@db.example", "pa55word"),
    ("https://u:p@ss@host.example/x", "ss@host"), ("Authorization: Bearer eyJabc.def", "eyJabc.def"),
    ("http://default:chpw@127.0.0.1:8123/", "chpw"), ("api_key=k3y-v4lue", "k3y-v4lue"),
])
def test_masking_covers_every_shape_a_review_found(text, secret):
    assert secret not in redact(text, ())


def test_masking_leaves_image_references_and_urls_alone():
    ref = "registry.example/team/app:dev-1@" + DIGEST
    assert redact(ref, ()) == ref and redact("http://127.0.0.1:15001/v2/", ()) == "http://127.0.0.1:15001/v2/"


def test_clickhouse_errors_never_print_the_password(workspace):
    res = run_process(["--topology", "topology.yaml", "events", "stats", "--clickhouse"], cwd=workspace, env={
        "FRACTALOPS_CLICKHOUSE_HOST": "http://default:chs3cret@127.0.0.1:9", "FRACTALOPS_CLICKHOUSE_PASSWORD": "chs3cret"})
    assert res.code != 0 and "chs3cret" not in res.err + res.out and "Traceback" not in res.err


def test_a_token_build_arg_is_never_printed_nor_in_the_docker_argv(tools, monkeypatch, run_cli):
    monkeypatch.setenv("NPM_TOKEN", "npm_s3cr3t_value")
    text = Path("topology.yaml").read_text()
    Path("topology.yaml").write_text(text.replace("    image: demo-api\n", "    image: demo-api\n    build_args: {NPM_TOKEN: '${NPM_TOKEN}', MODE: fast}\n"))
    res = run_cli("--topology", "topology.yaml", "plan", "--mode", "dev", "--json")
    assert res.code == 0 and "npm_s3cr3t_value" not in res.out + res.err
    docker = FakeTool(tools["bin"], "docker")
    docker.path.write_text(docker.path.read_text().replace("argv = sys.argv[1:]", "argv = sys.argv[1:]\nopen(" + repr(
        str(tools["bin"] / "env.txt")) + ", 'w').write(os.environ.get('NPM_TOKEN', ''))", 1))
    docker.expect("buildx", "build", write_metadata=DIGEST)
    assert up(tools).exit_code == 0
    argv = next(c for c in docker.calls if c[:2] == ["buildx", "build"])
    assert "npm_s3cr3t_value" not in " ".join(argv)
    assert argv[argv.index("MODE=fast") - 2:argv.index("MODE=fast") + 1] == ["NPM_TOKEN", "--build-arg", "MODE=fast"]
    assert (tools["bin"] / "env.txt").read_text() == "npm_s3cr3t_value"  # buildx reads it from its environment


def test_json_summary_and_stderr_are_masked(tools, monkeypatch, capsys):
    from buildplane.commands._output import print_json, stderr
    print_json({"error": "registry said: token=abc123secret"})
    stderr("helm: Authorization: Bearer eyJhbGciOi.secret")
    out, err = capsys.readouterr()
    assert "abc123secret" not in out and json.loads(out)["error"] == "registry said: token=***"
    assert "eyJhbGciOi.secret" not in err


# ---- base images: a moved tag is a changed input ---------------------------------------------------------

def test_external_bases_skip_stages_and_scratch_and_substitute_args():
    text = ("ARG BASE_REGISTRY=docker.io\nFROM ${BASE_REGISTRY}/library/python:3.12-slim AS deps\nRUN true\n"
            "FROM deps AS test\nFROM scratch\nFROM golang:1.22@sha256:" + "a" * 64 + "\n")
    assert external_bases(text, {"BASE_REGISTRY": "mirror.example:8083"}) == [
        "mirror.example:8083/library/python:3.12-slim", "golang:1.22@sha256:" + "a" * 64]
    assert registry_ref("python:3.12-slim") == "registry-1.docker.io/library/python:3.12-slim"
    assert registry_ref("docker.io/python:3") == "registry-1.docker.io/library/python:3"


def test_a_moved_base_tag_changes_the_inputs_after_the_max_age_or_with_pull(tmp_path):
    answers = {"mirror.example:8083/library/python:3.12-slim": "sha256:" + "1" * 64}
    asked: list[str] = []
    clock = [1000.0]

    def lookup(ref):
        asked.append(ref)
        return answers[ref]
    bases = BaseDigests(tmp_path / "bases.json", lookup, now=lambda: clock[0], max_age_s=600)
    image = ["mirror.example:8083/library/python:3.12-slim"]
    first = bases.resolve(image)
    answers[image[0]] = "sha256:" + "2" * 64  # the tag moved in the mirror
    clock[0] += 60
    assert bases.resolve(image) == first and len(asked) == 1  # within 10 minutes: the kept answer, no request
    assert bases.resolve(image, pull=True)[image[0]] == "sha256:" + "2" * 64  # --pull asks now
    clock[0] += 601
    answers[image[0]] = "sha256:" + "3" * 64
    assert bases.resolve(image)[image[0]] == "sha256:" + "3" * 64 and len(asked) == 3
    bases.save()
    assert json.loads((tmp_path / "bases.json").read_text())[image[0]]["digest"] == "sha256:" + "3" * 64


def test_an_unreachable_base_registry_never_fails_the_run_and_keeps_the_last_answer(tmp_path):
    said: list[str] = []
    ok = BaseDigests(tmp_path / "b.json", lambda ref: "sha256:" + "4" * 64, now=lambda: 0.0, max_age_s=1)
    ok.resolve(["python:3.12"])
    ok.save()

    def offline(ref):
        raise Missing("registry registry-1.docker.io does not answer (ConnectError)")
    later = BaseDigests(tmp_path / "b.json", offline, now=lambda: 100.0, max_age_s=1, log=said.append)
    assert later.resolve(["python:3.12"]) == {"python:3.12": "sha256:" + "4" * 64}
    assert said and "not resolved" in said[0]
    fresh = BaseDigests(None, offline, now=lambda: 0.0)
    assert fresh.resolve(["python:3.12"]) == {"python:3.12": "unresolved"}


def test_the_base_digest_is_part_of_the_image_inputs(workspace):
    Path("ctx/Dockerfile").write_text("FROM mirror.example:8083/library/busybox:1.35\nCOPY app.txt /app.txt\n")
    digest = ["sha256:" + "5" * 64]
    from buildplane.freshness import target_inputs
    topo = load("topology.yaml")

    def inputs():
        bases = BaseDigests(None, lambda ref: digest[0], now=lambda: 0.0)
        return target_inputs(topo, "api", Path.cwd(), StatCache(Path("c.json")), bases)[3]
    first = inputs()
    assert first.files["<FROM mirror.example:8083/library/busybox:1.35>"] == digest[0]
    digest[0] = "sha256:" + "6" * 64
    assert inputs().digest != first.digest
