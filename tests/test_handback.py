"""deploy mode against an Argo CD stand-in held to swagger.json: every case the issue names."""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from argo_standin import TOKEN, AppScript, ArgoStandIn, app_doc, write_topology
from buildplane.errors import Missing
from buildplane.tools.argocd import ArgoClient

T0, T1, T2 = "2026-11-23T10:00:00Z", "2026-11-23T10:00:05Z", "2026-11-23T10:00:09Z"


@pytest.fixture
def handback(workspace, run_cli, monkeypatch):
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no tilt here unless a test puts a fake one first

    def run(standin: ArgoStandIn, *extra: str, timeout_s: float = 20, topo_extra: str = ""):
        write_topology(standin.url, list(standin.apps), timeout_s, topo_extra)
        res = run_cli("--topology", "topology.yaml", "handback", "--json", *extra)
        assert standin.violations == [], standin.violations
        assert TOKEN not in res.out + res.err
        return res, (json.loads(res.out) if res.out.strip() else None)
    return run


def progressing_then_healthy(name: str, **kw) -> list[dict]:
    return [app_doc(name, "OutOfSync", "Progressing", phase="Running", started=T1, **kw),
            app_doc(name, "Synced", "Progressing", phase="Succeeded", started=T1, finished=T2, reconciled=T0, **kw),
            app_doc(name, "Synced", "Healthy", phase="Succeeded", started=T1, finished=T2, reconciled=T2, **kw)]


def test_already_synced_and_healthy_needs_no_sync(handback):
    with ArgoStandIn({"demo-api": AppScript([app_doc("demo-api")])}) as argo:
        res, doc = handback(argo)
    assert res.code == 0, res.err
    assert argo.calls("POST") == []
    assert argo.calls("GET") == [("GET", "/api/v1/applications/demo-api", {"refresh": "normal"}, None)]
    assert doc["apps"]["demo-api"] == {"app": "demo-api", "ok": True, "action": "none", "sync": "Synced",
                                       "health": "Healthy", "revision": "abc123def4567890",
                                       "duration_s": doc["apps"]["demo-api"]["duration_s"], "message": ""}


def test_out_of_sync_is_synced_and_waited_for(handback):
    script = AppScript([app_doc("demo-api", "OutOfSync", "Healthy")], after=progressing_then_healthy("demo-api"))
    with ArgoStandIn({"demo-api": script}) as argo:
        res, doc = handback(argo)
    assert res.code == 0, res.err
    assert argo.calls("POST") == [("POST", "/api/v1/applications/demo-api/sync", {}, {"name": "demo-api", "prune": False})]
    # reconciledAt older than finishedAt is not done yet: the wait read until the third snapshot
    assert len(argo.calls("GET")) == 1 + 3
    app = doc["apps"]["demo-api"]
    assert (app["ok"], app["action"], app["sync"], app["health"]) == (True, "sync", "Synced", "Healthy")
    assert re.search(r"demo-api\s+Synced\s+Healthy\s+abc123def456\s+\d+\.\ds\s+sync", res.err)
    events = [json.loads(line) for line in Path(".buildplane/events.jsonl").read_text().splitlines()]
    finished = [e["attributes"] for e in events if e["name"] == "step.finished"]
    assert [(a["cicd.pipeline.name"], a["cicd.pipeline.task.name"], a["cicd.pipeline.task.type"],
             a["cicd.pipeline.task.run.result"], a["argocd.app.health"]) for a in finished] == [
        ("deploy", "handback demo-api", "deploy", "success", "Healthy")]
    assert [e["name"] for e in events][::len(events) - 1] == ["run.started", "run.finished"]


def test_prune_as_configured(handback):
    script = AppScript([app_doc("demo-api", "OutOfSync")], after=progressing_then_healthy("demo-api"))
    with ArgoStandIn({"demo-api": script}) as argo:
        res, _ = handback(argo, topo_extra=", prune: true")
    assert res.code == 0, res.err
    assert argo.calls("POST")[0][3] == {"name": "demo-api", "prune": True}


def test_degraded_fails_fast_naming_app_and_message(handback):
    degraded = app_doc("demo-api", "Synced", "Degraded", phase="Succeeded", started=T1, finished=T2, reconciled=T2,
                       health_message="Deployment demo-api: CrashLoopBackOff (back-off restarting failed container)")
    script = AppScript([app_doc("demo-api", "OutOfSync")], after=[degraded])
    with ArgoStandIn({"demo-api": script}) as argo:
        res, doc = handback(argo, timeout_s=30)
    assert res.code == 1
    assert len(argo.calls("GET")) == 2  # failed at the first look after the sync, not at the timeout
    assert doc["apps"]["demo-api"]["health"] == "Degraded"
    assert "handback failed: demo-api: Degraded: Deployment demo-api: CrashLoopBackOff" in res.err


def test_operation_in_progress_is_waited_for_not_fought(handback):
    running = app_doc("demo-api", "OutOfSync", "Progressing", phase="Running", started=T1)
    done = app_doc("demo-api", "Synced", "Healthy", phase="Succeeded", started=T1, finished=T2, reconciled=T2)
    with ArgoStandIn({"demo-api": AppScript([running, running, done])}) as argo:
        res, doc = handback(argo)
    assert res.code == 0, res.err
    assert argo.calls("POST") == []
    assert doc["apps"]["demo-api"]["action"] == "waited-for-operation"


def test_sync_racing_another_operation_waits(handback):
    done = app_doc("demo-api", "Synced", "Healthy", phase="Succeeded", started=T1, finished=T2, reconciled=T2)
    script = AppScript([app_doc("demo-api", "OutOfSync"), done],
                       sync_error=(400, "another operation is already in progress"))
    with ArgoStandIn({"demo-api": script}) as argo:
        res, doc = handback(argo)
    assert res.code == 0, res.err
    assert doc["apps"]["demo-api"]["action"] == "waited-for-operation"


def test_auto_sync_app_is_refreshed_not_synced(handback):
    before = app_doc("demo-api", "OutOfSync", "Healthy", automated=True)
    after = app_doc("demo-api", "Synced", "Healthy", automated=True, phase="Succeeded", started=T1, finished=T2,
                    reconciled=T2)
    with ArgoStandIn({"demo-api": AppScript([before, before, after])}) as argo:
        res, doc = handback(argo)
    assert res.code == 0, res.err
    assert argo.calls("POST") == []
    assert argo.calls("GET")[0][2] == {"refresh": "normal"}
    assert doc["apps"]["demo-api"]["action"] == "refresh"


def test_dev_image_left_behind_is_named(handback):
    image = "registry.example/team/demo-api:dev-0123456789ab-0123456789ab"
    app = app_doc("demo-api", images=(image, "registry.example/team/sidecar:1.4.2"))
    with ArgoStandIn({"demo-api": AppScript([app])}) as argo:
        res, _ = handback(argo)
    assert res.code == 1
    assert f"still runs a dev-tagged image: {image}" in res.err and "sidecar" not in res.err.split("image:")[-1]


def test_401_names_the_token_variable_never_the_token(handback, monkeypatch):
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", "wrong-token-value")
    with ArgoStandIn({"demo-api": AppScript([app_doc("demo-api")])}) as argo:
        res, doc = handback(argo)
    assert res.code == 4
    assert "refused the token from $ARGOCD_AUTH_TOKEN (401: invalid session: token is malformed)" in res.err
    assert "wrong-token-value" not in res.out + res.err
    assert doc["apps"]["demo-api"]["ok"] is False


def test_no_credentials_is_exit_4_with_the_fix(handback, monkeypatch):
    monkeypatch.delenv("ARGOCD_AUTH_TOKEN")
    with ArgoStandIn({"demo-api": AppScript([app_doc("demo-api")])}) as argo:
        res, _ = handback(argo)
    assert res.code == 4 and "no credentials: set $ARGOCD_AUTH_TOKEN" in res.err
    assert argo.requests == []


def test_session_login_from_user_and_password_env(handback, monkeypatch):
    monkeypatch.delenv("ARGOCD_AUTH_TOKEN")
    monkeypatch.setenv("ARGO_USER", "admin")
    monkeypatch.setenv("ARGO_PASS", "pw-not-printed")
    with ArgoStandIn({"demo-api": AppScript([app_doc("demo-api")])}, users={"admin": "pw-not-printed"}) as argo:
        res, _ = handback(argo, topo_extra=", username_env: ARGO_USER, password_env: ARGO_PASS")
    assert res.code == 0, res.err
    assert argo.requests[0] == ("POST", "/api/v1/session", {}, {"username": "admin", "password": "pw-not-printed"})
    assert "pw-not-printed" not in res.out + res.err


def test_timeout_says_where_it_stood(handback):
    stuck = app_doc("demo-api", "OutOfSync", "Progressing", phase="Running", started=T1,
                    op_message="waiting for healthy state of apps/Deployment/demo-api")
    with ArgoStandIn({"demo-api": AppScript([app_doc("demo-api", "OutOfSync")], after=[stuck])}) as argo:
        res, doc = handback(argo, "--timeout", "0.5")
    assert res.code == 1
    assert doc["apps"]["demo-api"]["message"].startswith("timed out after 0.5s: OutOfSync/Progressing, operation Running: "
                                                         "waiting for healthy state")


def test_parallel_apps_report_each_one(handback):
    ok = AppScript([app_doc("demo-api", "OutOfSync")], after=progressing_then_healthy("demo-api"))
    bad = AppScript([app_doc("demo-web", "OutOfSync")], sync_error=(400, "ComparisonError: rpc error: repo not found"))
    with ArgoStandIn({"demo-api": ok, "demo-web": bad}) as argo:
        res, doc = handback(argo)
    assert res.code == 1
    assert doc["apps"]["demo-api"]["ok"] is True and doc["apps"]["demo-web"]["ok"] is False
    assert "demo-web: sync refused: ComparisonError: rpc error: repo not found" in res.err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_retries_with_backoff_then_exit_4():
    slept: list[float] = []
    client = ArgoClient(f"http://127.0.0.1:{free_port()}", environ={"ARGOCD_AUTH_TOKEN": TOKEN}, sleep=slept.append,
                        timeout_s=2)
    with pytest.raises(Missing, match=r"does not answer \(ConnectError"):
        client.get_app("demo-api")
    assert slept == [0.5, 1.0, 2.0, 4.0]


def test_503_is_retried_other_errors_are_not():
    slept: list[float] = []
    with ArgoStandIn({"demo-api": AppScript([app_doc("demo-api")])}, fail_status=503, fail_times=2) as argo:
        client = ArgoClient(argo.url, environ={"ARGOCD_AUTH_TOKEN": TOKEN}, sleep=slept.append)
        assert client.get_app("demo-api")["status"]["health"]["status"] == "Healthy"
    assert slept == [0.5, 1.0]
    with ArgoStandIn({}, fail_status=None) as argo:
        client = ArgoClient(argo.url, environ={"ARGOCD_AUTH_TOKEN": TOKEN}, sleep=slept.append)
        with pytest.raises(Exception, match="404"):
            client.get_app("nope")
    assert len(argo.requests) == 1 and slept == [0.5, 1.0]


def test_untrusted_tls_is_refused_with_the_ca_hint(tmp_path):
    """TLS is verified by default: a self-signed server fails at once (no retries), naming ca_file."""
    import ssl
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(app_doc("demo-api")).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        slept: list[float] = []
        with pytest.raises(Missing, match="not trusted .* set modes.deploy.argo.ca_file"):
            ArgoClient(url, environ={"ARGOCD_AUTH_TOKEN": TOKEN}, sleep=slept.append).get_app("demo-api")
        assert slept == []
        trusted = ArgoClient(url, environ={"ARGOCD_AUTH_TOKEN": TOKEN}, ca_file=str(cert))
        assert trusted.get_app("demo-api")["metadata"]["name"] == "demo-api"
    finally:
        server.shutdown()
        server.server_close()
