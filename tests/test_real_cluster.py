"""The dev loop against the lab's real Kubernetes API server (KWOK nodes): `helm upgrade --install --wait`,
`status --pods`, `logs`, `restart`, and what Helm does when things go wrong, which no stand-in shows.

Each test has a namespace of its own (made and removed here) and its own routes process (ops/lab/routes.py:
the files of the image each release runs, as an ingress would serve them), so tests do not share releases."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, missing_component
from lab import free_port, lab_env, make_app, process_env

pytestmark = [pytest.mark.real, pytest.mark.cluster]


def kubectl(lab: dict, *args: str, check: bool = True, context: str = "") -> subprocess.CompletedProcess:
    argv = [f"{lab['bin']}/kubectl", "--kubeconfig", lab["kubeconfig"], "--context", context or lab["kube_context"], *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture
def cluster(tmp_path):
    lab = lab_env()
    if "kubeconfig" not in lab or not Path(lab["kubeconfig"]).is_file():
        missing_component("the lab has no cluster (env.json names no kubeconfig): run `make lab-up`")
    try:
        kubectl(lab, "get", "--raw", "/readyz")
    except (subprocess.SubprocessError, OSError) as exc:
        missing_component(f"the lab's API server {lab.get('api_server')} does not answer: {exc}")
    return lab


@pytest.fixture
def app(cluster, tmp_path):
    """The example app in a namespace of its own, with routes on free ports serving what it releases."""
    lab = cluster
    root, ns = make_app(tmp_path, lab)
    namespace = f"bp-{ns}"
    ports = {"runtime": free_port(), "portal": free_port()}
    topo = root / "topology.yaml"
    text = topo.read_text().replace("namespace: fractalops-dev", f"namespace: {namespace}")
    text = text.replace("127.0.0.1:18080", f"127.0.0.1:{ports['runtime']}")
    text = text.replace("127.0.0.1:18081", f"127.0.0.1:{ports['portal']}")
    topo.write_text(text)
    kubectl(lab, "create", "namespace", namespace)
    env = process_env(lab, cluster=True, BUILDPLANE_KUBE_CONTEXT=lab["kube_context"])
    routes = subprocess.Popen(
        [sys.executable, str(ROOT / "ops/lab/routes.py"), lab["kubeconfig"],
         f"{ports['runtime']}={namespace}/fractalops-runtime/fractalops-api:/app/api/www",
         f"{ports['portal']}={namespace}/fractalops-portal/portal:/srv/www"],
        env={**env, "BP_LAB_CONTAINER_LOGS": str(Path(lab["kubeconfig"]).parent / "logs/containers")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield {"root": root, "lab": lab, "namespace": namespace, "env": env, "ports": ports}
    finally:
        os.killpg(routes.pid, signal.SIGTERM)
        routes.wait(timeout=10)
        kubectl(lab, "delete", "namespace", namespace, "--wait=false", check=False)


def bp(app: dict, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", *args], cwd=app["root"],
                          capture_output=True, text=True, env=env or app["env"], timeout=timeout)


def up(app: dict, *args: str, **kw) -> tuple[subprocess.CompletedProcess, dict]:
    res = bp(app, "up", "--mode", "dev", "--json", *args, **kw)
    return res, (json.loads(res.stdout) if res.stdout.strip() else {})


def deployment_image(app: dict, name: str) -> str:
    dep = json.loads(kubectl(app["lab"], "-n", app["namespace"], "get", "deployment", name, "-o", "json").stdout)
    return dep["spec"]["template"]["spec"]["containers"][0]["image"]


def test_up_status_logs_restart_on_the_real_api_server(app):
    res, summary = up(app, "runtime", "portal")
    assert res.returncode == 0, res.stderr
    for name in ("runtime", "portal"):
        t = summary["targets"][name]
        assert t["release"] == "applied" and t["smoke"] == "passed", (name, t)
    # The Deployment pins the digest buildplane pushed, and the route serves that image's files.
    runtime = summary["targets"]["runtime"]
    assert deployment_image(app, "fractalops-api").endswith("@" + runtime["digest"])
    assert httpx.get(f"http://127.0.0.1:{app['ports']['runtime']}/healthz", timeout=10).text.strip() == "ok"

    again, second = up(app, "runtime", "portal")
    assert again.returncode == 0, again.stderr
    assert {t["release"] for t in second["targets"].values()} == {"fresh"}  # no helm upgrade, no new revision

    status = bp(app, "status", "--pods", "--json", "runtime", "portal")
    assert status.returncode == 0, status.stderr
    before = json.loads(status.stdout)["targets"]
    assert all(t["runs_released"] for t in before.values()), before
    assert before["runtime"]["revision"] == 1

    logs = bp(app, "logs", "runtime", "--tail", "50")
    assert logs.returncode == 0, logs.stderr
    assert "fractalops-api | GET /healthz 200" in logs.stdout  # the smoke's request, as the pod's log

    restart = bp(app, "restart", "runtime", "--json")
    assert restart.returncode == 0, restart.stderr
    after = json.loads(bp(app, "status", "--pods", "--json", "runtime").stdout)["targets"]["runtime"]
    assert after["revision"] == 2 and after["runs_released"]
    assert deployment_image(app, "fractalops-api").endswith("@" + runtime["digest"])  # same image


def test_a_pod_that_never_becomes_ready_times_out_and_is_rolled_back(app):
    root = app["root"]
    first, summary = up(app, "runtime")
    assert first.returncode == 0, first.stderr
    # More CPU than the KWOK node has: the new pods stay Pending, so `helm --wait` runs out.
    (root / "charts/fractalops-runtime/values-dev.yaml").write_text(
        "worker:\n  enabled: false\napi:\n  resources:\n    requests: {cpu: '64', memory: 64Mi}\n")
    topo = root / "topology.yaml"
    topo.write_text(topo.read_text().replace('release: true\n', 'release: true\n    helm_timeout: "8s"\n', 1))
    res, failed = up(app, "runtime")
    assert res.returncode == 1, res.stderr
    assert failed["targets"]["runtime"]["release"] == "failed"
    assert "Helm rolled it back: revision 3, a copy of revision 1, is deployed" in res.stderr, res.stderr
    history = json.loads(subprocess.run(
        [f"{app['lab']['bin']}/helm", "history", "fractalops-runtime", "-n", app["namespace"], "-o", "json",
         "--kube-context", app["lab"]["kube_context"]], capture_output=True, text=True, env=app["env"], check=True).stdout)
    assert history[-1]["status"] == "deployed" and history[-2]["status"] == "failed", history
    # What runs is still the first release's image.
    assert deployment_image(app, "fractalops-api").endswith("@" + summary["targets"]["runtime"]["digest"])


def test_someone_elses_helm_upgrade_is_noticed_and_released_over(app):
    first, summary = up(app, "runtime")
    assert first.returncode == 0, first.stderr
    other = subprocess.run(
        [f"{app['lab']['bin']}/helm", "upgrade", "fractalops-runtime", str(app["root"] / "charts/fractalops-runtime"),
         "-n", app["namespace"], "--kube-context", app["lab"]["kube_context"], "--reuse-values",
         "--set", "image.digest=sha256:" + "0" * 64], capture_output=True, text=True, env=app["env"])
    assert other.returncode == 0, other.stderr
    res, second = up(app, "runtime")
    assert res.returncode == 0, res.stderr
    assert second["targets"]["runtime"]["release"] == "applied", second
    assert second["targets"]["runtime"]["revision"] == 3
    assert deployment_image(app, "fractalops-api").endswith("@" + summary["targets"]["runtime"]["digest"])


def test_a_chart_writing_into_another_namespace_is_refused_before_anything_is_applied(app):
    chart = app["root"] / "charts/fractalops-portal/templates/portal.yaml"
    chart.write_text(chart.read_text() + "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sneaky\n"
                     "  namespace: fractalops\ndata: {a: b}\n")
    res, summary = up(app, "portal")
    assert res.returncode == 3, res.stderr
    assert "fractalops" in res.stderr
    assert kubectl(app["lab"], "-n", "fractalops", "get", "configmap", "sneaky", check=False).returncode != 0
    releases = subprocess.run([f"{app['lab']['bin']}/helm", "list", "-n", app["namespace"], "-q",
                               "--kube-context", app["lab"]["kube_context"]], capture_output=True, text=True,
                              env=app["env"], check=True).stdout.split()
    assert "fractalops-portal" not in releases


def test_a_user_without_read_rights_gets_one_line_from_status_and_logs(app):
    lab = app["lab"]
    # The restricted user may release into fractalops-dev only; this test's namespace is not it.
    env = {**app["env"], "BUILDPLANE_KUBE_CONTEXT": lab["kube_context_restricted"]}
    for args in (("status", "--pods", "runtime"), ("logs", "runtime")):
        res = bp(app, *args, env=env)
        assert res.returncode == 4, (args, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "refused" in lines[0] and "403" in lines[0], lines
        assert "Traceback" not in res.stderr


def test_restart_refuses_what_up_refuses_on_the_real_cluster(app):
    res, _ = up(app, "runtime")
    assert res.returncode == 0, res.stderr
    tpl = app["root"] / "charts/fractalops-runtime/templates/api.yaml"
    tpl.write_text(tpl.read_text() + "\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n"
                   "metadata: {name: bp-test-sneaky}\nrules: []\n")
    restart = bp(app, "restart", "runtime")
    assert restart.returncode == 3, restart.stderr
    assert "ClusterRole" in restart.stderr
    assert kubectl(app["lab"], "get", "clusterrole", "bp-test-sneaky", check=False).returncode != 0
    history = json.loads(subprocess.run(
        [f"{app['lab']['bin']}/helm", "history", "fractalops-runtime", "-n", app["namespace"], "-o", "json",
         "--kube-context", app["lab"]["kube_context"]], capture_output=True, text=True, env=app["env"], check=True).stdout)
    assert len(history) == 1  # no new revision


def helm_child(pid: int) -> int:
    """The `helm` process the run started (found by its parent, never by name)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and argv[0].endswith(b"helm") and b"upgrade" in argv:
                return int(entry.name)
    raise AssertionError("no helm upgrade under the run")


@pytest.mark.parametrize("how", ["ctrl-c", "helm-killed"])
def test_an_interrupted_wait_names_the_release_state_and_the_recovery(app, how):
    """`helm upgrade --wait` on pods that never become Ready. Ctrl-C: Helm gets the grace period and (helm 4,
    --rollback-on-failure) rolls back by itself within it; the line says so (a second Ctrl-C does the same
    here: its rollback is done before the KILL). Helm itself killed mid-wait (OOM, a machine going down):
    the release stays pending-upgrade, and the `helm rollback …` line the run prints works."""
    root, lab = app["root"], app["lab"]
    first, summary = up(app, "runtime")
    assert first.returncode == 0, first.stderr
    (root / "charts/fractalops-runtime/values-dev.yaml").write_text(
        "worker:\n  enabled: false\napi:\n  resources:\n    requests: {cpu: '64', memory: 64Mi}\n")
    env = {**app["env"], "BUILDPLANE_HELM_GRACE_S": "20"}
    proc = subprocess.Popen([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "up", "--mode", "dev",
                             "runtime"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    helm = [f"{lab['bin']}/helm", "-n", app["namespace"], "--kube-context", lab["kube_context"]]

    def status() -> str:
        out = subprocess.run([*helm, "status", "fractalops-runtime", "-o", "json"], capture_output=True, text=True,
                             env=app["env"])
        return json.loads(out.stdout)["info"]["status"] if out.returncode == 0 else "?"
    deadline = time.monotonic() + 60
    while status() != "pending-upgrade":  # until Helm has started the upgrade and waits
        assert time.monotonic() < deadline and proc.poll() is None, "the upgrade never started"
        time.sleep(0.2)
    time.sleep(1)
    if how == "ctrl-c":
        proc.send_signal(signal.SIGINT)
    else:
        os.kill(helm_child(proc.pid), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if how == "ctrl-c" else 1), err
    if how == "ctrl-c":
        assert "Helm rolled it back: revision 3, a copy of revision 1, is deployed" in err, err
    else:
        line = next((ln for ln in err.splitlines() if "helm rollback fractalops-runtime" in ln), None)
        assert line is not None and "pending-upgrade" in line, err
        start = line.index("`helm rollback") + 1
        argv = line[start:line.index("`", start)].split()
        argv[0] = f"{lab['bin']}/helm"
        done = subprocess.run(argv, capture_output=True, text=True, env=app["env"], timeout=120)
        assert done.returncode == 0, done.stderr
    assert status() == "deployed"
    assert deployment_image(app, "fractalops-api").endswith("@" + summary["targets"]["runtime"]["digest"])


def _shape(obj, prefix: str = "") -> set[str]:
    """Every key path of a JSON document (a list's first item stands for all)."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out |= {f"{prefix}.{k}"} | _shape(v, f"{prefix}.{k}")
    elif isinstance(obj, list) and obj:
        out |= _shape(obj[0], prefix + "[]")
    return out


def test_the_kube_standin_answers_in_the_real_api_servers_shape(app, tmp_path):
    """The unit tests' Kubernetes stand-in (tests/kube_standin.py), held to the real server: the requests
    `status --pods` and `logs` make of it are sent to the lab's API server too, and every key path the
    stand-in answers with is in the real answer (which may hold more)."""
    import httpx as _httpx
    from kube_standin import KubeStandIn, autoscaler, deployment, pod
    res, summary = up(app, "runtime")
    assert res.returncode == 0, res.stderr
    ns, release, lab = app["namespace"], "fractalops-runtime", app["lab"]
    digest = summary["targets"]["runtime"]["digest"]
    repo = summary["targets"]["runtime"]["image"].rsplit(":", 1)[0]
    real_pod = json.loads(kubectl(lab, "-n", ns, "get", "pods", "-o", "json").stdout)["items"][0]["metadata"]["name"]
    # A new autoscaler has no status.currentReplicas until its controller has looked (the API omits unset
    # fields; diagnostics reads a missing one as 0): compare once it has one.
    deadline = time.monotonic() + 60
    while "currentReplicas" not in json.loads(kubectl(lab, "-n", ns, "get", "hpa", "-o", "json").stdout)["items"][0].get(
            "status", {}):
        assert time.monotonic() < deadline, "the autoscaler's controller never wrote its status"
        time.sleep(0.5)
    with KubeStandIn() as standin:
        standin.add("pods", pod(f"{release}-1", release, ns, image=f"{repo}@{digest}", digest=digest,
                                container="fractalops-api"))
        standin.add("deployments", deployment(release, ns, replicas=2, ready=2))
        standin.add("autoscalers", autoscaler(release, ns, low=2, high=6, current=2))
        standin.log(f"{release}-1", "fractalops-api", "a line")
        config = standin.kubeconfig(tmp_path / "standin-kubeconfig", context=lab["kube_context"])
        env = {**app["env"], "KUBECONFIG": str(config)}
        for args in (("status", "--pods", "runtime"), ("logs", "runtime", "--tail", "5")):
            assert bp(app, *args, env=env).returncode == 0
        # `status --pods` also runs the real `helm status`, which reads the same kubeconfig: only the reader's
        # requests (the contract's paths) are buildplane's.
        from kube_standin import ROUTES
        asked = [(m, p, q) for m, p, q in standin.requests if any(r.match(p) for r, _ in ROUTES)]
        answers = {}
        for method, path, query in asked:
            got = _httpx.get(standin.url + path, params=query, headers={"Authorization": "Bearer standin-token"})
            answers[(path, tuple(sorted(query.items())))] = got
    assert {m for m, _, _ in asked} == {"GET"}
    assert {p.rsplit("/", 1)[-1] for _, p, _ in asked} == {"pods", "deployments", "horizontalpodautoscalers", "log"}
    pki = Path(lab["kubeconfig"]).parent / "pki"
    import ssl as _ssl
    tls = _ssl.create_default_context(cafile=str(pki / "ca.crt"))
    tls.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    real = _httpx.Client(base_url=lab["api_server"], verify=tls, timeout=15)
    compared = 0
    for (path, query), mine in answers.items():
        theirs = real.get(path.replace(f"{release}-1", real_pod), params=dict(query))
        assert theirs.status_code == mine.status_code == 200, (path, theirs.status_code, theirs.text[:300])
        if path.endswith("/log"):
            assert theirs.headers["content-type"].startswith("text/plain") and mine.headers["content-type"].startswith("text/plain")
            continue
        missing = _shape(mine.json()) - _shape(theirs.json())
        assert not missing, (path, sorted(missing))
        compared += 1
    assert compared >= 3  # pods, deployments, autoscalers
