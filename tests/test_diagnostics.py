"""Diagnostics (#16): `status --pods`, `logs` and `restart`, against a Kubernetes API stand-in held to the
API's own OpenAPI description (tests/kube_standin.py) with the real `kubernetes` client, and a fake
`helm` that fails on any call nobody expected. Reads only: a test proves no mutating call is ever made."""
from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from kube_standin import KubeStandIn, autoscaler, deployment, pod

NS, RELEASE, REPO = "demo-dev", "demo-api", "registry.example/team/demo-api"
RELEASED = "sha256:" + "1" * 64
OLD = "sha256:" + "2" * 64


@pytest.fixture
def api(tools, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")  # the fake helm
    with KubeStandIn() as standin:
        monkeypatch.setenv("KUBECONFIG", str(standin.kubeconfig(tmp_path / "standin-kubeconfig")))
        yield standin
    assert standin.violations == [], standin.violations  # every request a read the API defines, as it defines it
    assert {method for method, _, _ in standin.requests} <= {"GET"}


def released(digest: str = RELEASED, revision: int = 7) -> None:
    """The release record `up` leaves after applying the target's release."""
    path = Path(".buildplane/state/release-dev-api.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"image_digest": digest, "revision": revision, "applied": True, "release": RELEASE,
                                "namespace": NS, "kube_context": "lab", "inputs": "sha256:x"}))


def status_pods(run_cli, *extra: str):
    res = run_cli("--topology", "topology.yaml", "status", "--pods", "--json", *extra)
    return res, (json.loads(res.out)["targets"]["api"] if res.out.strip() else None)


def test_pods_that_run_the_released_digest(api, run_cli):
    released()
    api.add("deployments", deployment(RELEASE, NS, replicas=2, ready=2))
    api.add("autoscalers", autoscaler(RELEASE, NS, low=2, high=5, current=2))
    for i in (1, 2):
        api.add("pods", pod(f"{RELEASE}-{i}", RELEASE, NS, image=f"{REPO}@{RELEASED}", digest=RELEASED))
    res, out = status_pods(run_cli)
    assert res.code == 0, res.err
    assert out["release_status"] == "deployed" and out["revision"] == 7 and out["runs_released"] is True
    assert out["workloads"] == [{"name": RELEASE, "ready": 2, "desired": 2, "updated": 2,
                                 "hpa": {"min": 2, "max": 5, "current": 2}}]
    assert [p["phase"] for p in out["pods"]] == ["Running", "Running"] and out["fix"] is None
    text = run_cli("--topology", "topology.yaml", "status", "--pods").out
    assert "api: release demo-api deployed at revision 7; runs the image buildplane released" in text
    assert "deployment demo-api: 2/2 ready, 2 updated; autoscaled 2–5, now 2" in text


def test_a_crash_looping_oom_killed_pod_is_named_with_the_fix(api, run_cli):
    released()
    api.add("pods", pod(f"{RELEASE}-old", RELEASE, NS, image=f"{REPO}@{OLD}", digest=OLD))
    api.add("pods", pod(f"{RELEASE}-new", RELEASE, NS, image=f"{REPO}@{RELEASED}", digest=RELEASED, ready=False,
                        restarts=4, waiting="CrashLoopBackOff", last="OOMKilled"))
    res, out = status_pods(run_cli)
    assert res.code == 1 and out["runs_released"] is False
    new = next(p for p in out["pods"] if p["name"].endswith("-new"))
    assert new["restarts"] == 4 and "CrashLoopBackOff" in new["problem"] and "last ended OOMKilled (exit 137)" in new["problem"]
    assert out["fix"].startswith(f"pod {RELEASE}-new is unwell") and "buildplane logs api --previous" in out["fix"]


def test_an_image_the_cluster_cannot_pull_is_named(api, run_cli):
    released()
    api.add("pods", pod(f"{RELEASE}-x", RELEASE, NS, image=f"{REPO}@{RELEASED}", digest=None, phase="Pending",
                        ready=False, waiting="ImagePullBackOff"))
    res, out = status_pods(run_cli)
    assert res.code == 1 and f"ImagePullBackOff ({REPO}@{RELEASED})" in out["pods"][0]["problem"]
    assert "cannot pull the image" in out["fix"] and "imagePullSecrets" in out["fix"]


def test_pods_on_another_image_say_edits_are_not_reaching_them(api, run_cli):
    released()
    api.add("pods", pod(f"{RELEASE}-1", RELEASE, NS, image=f"{REPO}@{OLD}", digest=OLD))
    res, out = status_pods(run_cli)
    assert res.code == 1 and out["runs_released"] is False
    assert "another image than the released sha256:111111111111" in out["fix"] and "--force" in out["fix"]


def test_status_pods_needs_an_allowed_context(api, run_cli, monkeypatch):
    res = run_cli("--topology", "topology.yaml", "status", "--pods", "--kube-context", "prod")
    assert res.code == 3 and "kube-context-allow-list" in res.err
    assert api.requests == []  # refused before any call


def test_logs_prefix_every_line_and_pass_since_and_previous(api, run_cli):
    for name in ("a", "b"):
        api.add("pods", pod(f"{RELEASE}-{name}", RELEASE, NS, image=f"{REPO}@{RELEASED}", digest=RELEASED))
        api.log(f"{RELEASE}-{name}", "app", f"hello from {name}", "second line")
    api.log(f"{RELEASE}-a", "app", "before the crash", previous=True)
    res = run_cli("--topology", "topology.yaml", "logs", "api", "--since", "10m")
    assert res.code == 0, res.err
    assert res.out.splitlines() == [f"{RELEASE}-a/app | hello from a", f"{RELEASE}-a/app | second line",
                                    f"{RELEASE}-b/app | hello from b", f"{RELEASE}-b/app | second line"]
    logs = [q for m, p, q in api.requests if p.endswith("/log")]
    assert all(q["sinceSeconds"] == "600" and q["container"] == "app" for q in logs)
    res = run_cli("--topology", "topology.yaml", "logs", "api", "--previous")
    assert f"{RELEASE}-a/app | before the crash" in res.out
    assert run_cli("--topology", "topology.yaml", "logs", "--since", "yesterday").code == 2


def test_logs_follow_new_pods_as_they_roll_and_stop_on_ctrl_c(api, tmp_path):
    api.add("pods", pod(f"{RELEASE}-1", RELEASE, NS, image=f"{REPO}@{OLD}", digest=OLD))
    api.log(f"{RELEASE}-1", "app", "old pod line")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "logs", "api", "-f"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        seen = wait_for_line(proc, "old pod line")
        api.add("pods", pod(f"{RELEASE}-2", RELEASE, NS, image=f"{REPO}@{RELEASED}", digest=RELEASED))  # the rollout
        api.log(f"{RELEASE}-2", "app", "new pod line")
        seen += wait_for_line(proc, "new pod line")
        api.log(f"{RELEASE}-1", "app", "old pod still talking")
        seen += wait_for_line(proc, "old pod still talking")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"{RELEASE}-2/app | new pod line" in seen and f"{RELEASE}-1/app | old pod line" in seen
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "buildplane: stopped following logs"
    follows = [q for m, p, q in api.requests if p.endswith("/log")]
    assert follows and all(q["follow"] == "true" for q in follows)


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 20.0) -> str:
    """Read the process's stdout until a line holds `text`; everything read."""
    import selectors
    got, deadline = "", time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline:
        if sel.select(timeout=0.5):
            line = proc.stdout.readline()
            got += line
            if text in line:
                return got
    raise AssertionError(f"{text!r} never came; got {got!r}; stderr so far unknown")


RENDERED_OK = ("---\n# Source: demo/templates/deploy.yaml\napiVersion: apps/v1\nkind: Deployment\n"
               "metadata: {name: demo-api}\n")


def test_restart_refuses_what_a_release_would_refuse_before_anything_is_applied(tools, run_cli, monkeypatch):
    """The working tree's chart gained a ClusterRole and an object in the protected namespace: `up` refuses
    it (rendered-namespace); so does `restart`, which would otherwise apply it with --reuse-values."""
    monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")
    released(revision=7)
    tools["helm"].expect("get", "values", "demo-api", stdout="{}\n")
    tools["helm"].rules.insert(0, {"prefix": ["template", "demo-api"], "stdout": RENDERED_OK + (  # before the default render
        "---\n# Source: demo/templates/sneaky.yaml\napiVersion: v1\nkind: ConfigMap\n"
        "metadata: {name: sneaky, namespace: prod}\n")})
    tools["helm"]._save()
    res = run_cli("--topology", "topology.yaml", "restart", "api")
    assert res.code == 3, res.err
    assert "prod" in res.err and "rendered-namespace" in res.err
    assert not [c for c in tools["helm"].calls if c[:1] == ["upgrade"]]
    assert tools["helm"].unexpected() == []
    (template,) = [c for c in tools["helm"].calls if c[:1] == ["template"]]
    assert "restartedAt=" in " ".join(template) and "-f" in template


def test_restart_is_a_helm_upgrade_with_the_same_image(tools, run_cli, monkeypatch):
    monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")
    released(revision=7)
    tools["helm"].expect("get", "values", "demo-api", stdout="image: {repository: r, digest: d}\n")
    tools["helm"].expect("template", "demo-api", stdout=RENDERED_OK)
    tools["helm"].expect("upgrade", "demo-api", stdout="Release \"demo-api\" has been upgraded.\nREVISION: 8\n")
    res = run_cli("--topology", "topology.yaml", "restart", "api", "--json")
    assert res.code == 0, res.err
    api = json.loads(res.out)["targets"]["api"]
    assert set(api) == {"restart", "revision", "reason"}
    assert api["restart"] == "applied" and api["revision"] == 8
    assert re.fullmatch(r"restarted at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: revision 8, same image", api["reason"])
    (call,) = [c for c in tools["helm"].calls if c[:1] == ["upgrade"]]
    assert call[:3] == ["upgrade", "demo-api", "chart"] and "--install" not in call
    assert call[call.index("--namespace") + 1] == NS and call[call.index("--kube-context") + 1] == "lab"
    assert "--reuse-values" in call and "--wait" in call and "--rollback-on-failure" in call
    stamp = call[call.index("--set-string") + 1]
    assert re.fullmatch(r"restartedAt=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert not any(a.startswith("image") for a in call)  # the image stays what the release has
    record = json.loads(Path(".buildplane/state/release-dev-api.json").read_text())
    assert record["revision"] == 8 and record["image_digest"] == RELEASED  # the next `up` knows the live release


@pytest.mark.parametrize("args,rule", [
    (["--mode", "staging"], "staging-apply"),
    (["--kube-context", "prod"], "kube-context-allow-list"),
])
def test_restart_is_refused_where_a_release_would_be(tools, run_cli, args, rule, monkeypatch):
    monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")
    res = run_cli("--topology", "topology.yaml", "restart", "api", *args)
    assert res.code == 3 and rule in res.err
    assert not [c for c in tools["helm"].calls if c[:1] == ["upgrade"]]


def test_the_chart_rolls_pods_on_restart():
    """Real Helm: `restartedAt` becomes a pod-template annotation (a new value rolls the pods), absent otherwise."""
    helm = os.environ.get("BUILDPLANE_HELM") or next((str(p) for p in [Path.home() / ".cache/buildplane/lab/bin/helm"]
                                                      if p.exists()), None)
    if helm is None:
        from conftest import missing_component
        missing_component("helm is not installed: run `make provision`")
    base = ["template", "r", str(ROOT / "charts/fractalops-portal"), "--set", "image.repository=r/x",
            "--set", "image.digest=sha256:" + "a" * 64]
    with_stamp = subprocess.run([helm, *base, "--set-string", "restartedAt=2026-12-03T08:00:00Z"],
                                capture_output=True, text=True, check=True).stdout
    without = subprocess.run([helm, *base], capture_output=True, text=True, check=True).stdout
    assert 'buildplane.dev/restarted-at: "2026-12-03T08:00:00Z"' in with_stamp and "restarted-at" not in without


MUTATING = re.compile(r"^(create|patch|replace|delete|connect)_|^(rollout|scale|evict)")


def test_no_mutating_kubernetes_call_exists_in_the_product():
    """Every call on a Kubernetes client object in buildplane is a list or a log read; kubectl goes
    through the runner's read-only verb check (test_no_kubectl.py)."""
    calls = set()
    for path in (ROOT / "buildplane").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                calls.add((path.name, node.func.attr))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and MUTATING.match(node.value):
                calls.add((path.name, node.value))  # getattr(api, "delete_…")
    assert not [c for c in calls if MUTATING.match(c[1]) and c[0] in ("kube.py", "logs.py", "status.py")]
    kube_calls = {name for file, name in calls if file == "kube.py" and ("namespaced" in name)}
    assert kube_calls <= {"read_namespaced_pod_log"}
    source = (ROOT / "buildplane/tools/kube.py").read_text()
    used = set(re.findall(r'"(list_namespaced_\w+|read_namespaced_\w+)"', source)) | set(
        re.findall(r"\.(read_namespaced_\w+|list_namespaced_\w+)\(", source))
    assert used == {"list_namespaced_pod", "list_namespaced_deployment", "list_namespaced_horizontal_pod_autoscaler",
                    "read_namespaced_pod_log"}


def test_a_cluster_that_does_not_answer_is_one_line_and_exit_4(tools, run_cli, tmp_path, monkeypatch):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        config = tmp_path / "kubeconfig-down"
        config.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "lab",
                                      "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                                      "users": [{"name": "u", "user": {"token": "t"}}],
                                      "contexts": [{"name": "lab", "context": {"cluster": "c", "user": "u"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(config))
        monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")
        started = time.monotonic()
        res = run_cli("--topology", "topology.yaml", "logs", "api")
    assert res.code == 4 and len(res.err.strip().splitlines()) == 1, res.err
    assert "the cluster of kube context lab does not answer" in res.err
    assert time.monotonic() - started < 10


def test_terminal_escapes_from_the_cluster_are_shown_not_obeyed(api, run_cli):
    """A status message or a log line holding ESC]0;…BEL (retitle) or ESC[2J (clear) is printed escaped;
    `logs --raw` passes log lines through as written, for whoever asked for exactly that."""
    released()
    api.add("deployments", deployment(RELEASE, NS, replicas=1, ready=0))
    evicted = pod(f"{RELEASE}-1", RELEASE, NS, image=f"{REPO}@{RELEASED}", digest=RELEASED, phase="Failed")
    evicted["status"].update(reason="Evicted", message="node low on memory\x1b]0;pwned\x07\x1b[2J")
    api.add("pods", evicted)
    api.log(f"{RELEASE}-1", "app", "ok \x1b[2J\x1b]0;title\x07 \r done")
    res = run_cli("--topology", "topology.yaml", "status", "--pods")
    assert "\x1b" not in res.out and "\x07" not in res.out, repr(res.out)
    assert "node low on memory\\x1b]0;pwned\\x07\\x1b[2J" in res.out
    logs = run_cli("--topology", "topology.yaml", "logs", "api")
    assert logs.code == 0, logs.err
    assert logs.out.splitlines() == [f"{RELEASE}-1/app | ok \\x1b[2J\\x1b]0;title\\x07 \\x0d done"]
    raw = run_cli("--topology", "topology.yaml", "logs", "api", "--raw")
    assert "\x1b[2J" in raw.out
