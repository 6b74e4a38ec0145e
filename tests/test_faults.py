"""Fault injection (#15): hostile tool output, failures and signals mid-release, killed runs, walked-around guards.

Each test sets up one fault at the tool boundary (fake executables that record argv and fail on any
unexpected call, or real Helm where it runs here) and checks what the user sees and what is left behind.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from buildplane.errors import Interrupted
from buildplane.tools import children, run as run_mod
from buildplane.tools.run import Runner
from buildplane.tools.tilt import start_ticks
from conftest import HELM_STATUS, RENDERED, missing_component, run_process
from fakes import DIGEST, FakeTool, seed_builder, up

TWO_RELEASES = """  web:
    context: ctx
    dockerfile: ctx/Dockerfile
    image: demo-web
    chart: chart
    values: [chart/values-dev.yaml]
"""


def two_targets() -> None:
    """Make `web` a released, default target beside `api`."""
    text = Path("topology.yaml").read_text()
    start = text.index("  web:\n")
    end = text.index("modes:")
    Path("topology.yaml").write_text(text[:start] + TWO_RELEASES + text[end:])


def fake_helm(bin_dir: Path, *, upgrade: dict, status: str = HELM_STATUS) -> FakeTool:
    helm = FakeTool(bin_dir, "helm").expect("version", "--short", stdout="v4.1.4+g1234567\n")
    helm.expect("template", stdout=RENDERED)
    helm.expect("status", stdout=status)
    helm.expect("upgrade", "--install", **upgrade)
    return helm


# ---- 1. output that is not UTF-8 ---------------------------------------------------------------------

def test_non_utf8_output_with_a_line_callback_neither_raises_nor_stalls_the_pipe(tmp_path):
    """One Latin-1 byte, then far more than a pipe buffer: the reader keeps draining, the line is kept."""
    tool = tmp_path / "noisy"
    tool.write_text("#!/bin/sh\nprintf 'caf\\351\\n'\nhead -c 300000 /dev/zero | tr '\\0' 'x' | fold -w 100\n"
                    "printf 'done\\n' >&2\n")
    tool.chmod(0o755)
    lines: list[str] = []
    started = time.monotonic()
    result = Runner(extra_path=[str(tmp_path)]).run(["noisy"], timeout=30, on_line=lines.append)
    assert time.monotonic() - started < 10
    assert result.exit_code == 0 and lines[0] == "caf\ufffd" and len(lines) == 3002
    assert "done" in result.stderr


def test_a_tool_given_no_stdin_reads_an_empty_one_whichever_way_its_output_goes(tmp_path):
    """No stdin is an empty stdin (EOF at once), also with a line callback on stdout — where sh would
    otherwise hand the child a queue nobody feeds (and poll it every 100 ms while the tool runs)."""
    tool = tmp_path / "reader"
    tool.write_text("#!/bin/sh\nwc -c\n")
    tool.chmod(0o755)
    runner = Runner(extra_path=[str(tmp_path)])
    lines: list[str] = []
    assert runner.run(["reader"], timeout=5, on_line=lines.append).exit_code == 0 and lines == ["0"]
    assert runner.run(["reader"], timeout=5).stdout.strip() == "0"
    assert runner.run(["reader"], timeout=5, stdin="four").stdout.strip() == "4"


def test_non_utf8_output_into_plain_buffers(tmp_path):
    tool = tmp_path / "latin"
    tool.write_text("#!/bin/sh\nprintf 'na\\357ve\\n'\nprintf '\\377\\376' >&2\nexit 3\n")
    tool.chmod(0o755)
    result = Runner(extra_path=[str(tmp_path)]).run(["latin"], timeout=10, check=False)
    assert result.exit_code == 3 and result.stdout == "na\ufffdve\n" and result.stderr == "\ufffd\ufffd"


# ---- 2. a release is never cut short by another target, and gets time on an interrupt ----------------

def test_another_targets_failure_never_interrupts_a_release(tools, tmp_path):
    two_targets()
    finished = tmp_path / "helm-finished"
    docker = FakeTool(tools["bin"], "docker")
    docker.expect("buildx", "build", has="demo-web", sleep=0.6, stderr="ERROR: failed to solve\n", exit=1)
    docker.expect("buildx", "build", write_metadata=DIGEST)
    helm = fake_helm(tools["bin"], upgrade={"sleep": 2.0, "touch": str(finished), "stdout": "REVISION: 7\n"})
    summary = up(tools, targets=())
    targets = summary.to_json()["targets"]
    assert summary.exit_code == 1 and targets["web"]["build"] == "failed"
    # The upgrade ran to its end (it was not TERMed 0.6 s in) and its revision is recorded.
    assert finished.is_file() and targets["api"]["release"] == "applied"
    assert json.loads(Path(".buildplane/state/release-dev-api.json").read_text())["revision"] == 7
    assert not helm.unexpected() and not docker.unexpected()


def _signal_when(path: Path, sig: int = signal.SIGTERM) -> threading.Thread:
    """Send `sig` to this process once `path` shows the fake tool started (the engine takes it on the main thread)."""
    def go() -> None:
        for _ in range(200):
            if path.exists() and any(json.loads(line)[1:3] == ["upgrade", "--install"]
                                     for line in path.read_text().splitlines()):
                time.sleep(0.3)
                os.kill(os.getpid(), sig)
                return
            time.sleep(0.05)
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def test_an_interrupt_lets_helm_finish_and_the_summary_says_what_it_left(tools, tmp_path):
    finished = tmp_path / "helm-finished"
    helm = fake_helm(tools["bin"], upgrade={"sleep": 1.5, "touch": str(finished), "stdout": "REVISION: 7\n"})
    _signal_when(helm.log)
    summary = up(tools)
    assert summary.exit_code == 130
    assert finished.is_file() and summary.to_json()["targets"]["api"]["release"] == "applied"


def test_an_interrupt_outlasting_the_grace_stops_helm_and_names_the_pending_release(tools, tmp_path, monkeypatch):
    monkeypatch.setattr(run_mod, "PROTECTED_GRACE_S", 0.5)
    pending = HELM_STATUS.replace('"deployed"', '"pending-upgrade"').replace('"version":7', '"version":8')
    helm = fake_helm(tools["bin"], upgrade={"sleep": 30}, status=pending)
    _signal_when(helm.log)
    started = time.monotonic()
    summary = up(tools)
    assert time.monotonic() - started < 15  # 0.5 s grace + TERM, never the fake's 30 s
    release = summary.results["release:api"]
    assert summary.exit_code == 130 and release.status.value == "failed"
    assert "stopped by a signal" in release.reason and "pending-upgrade at revision 8" in release.reason
    assert "helm rollback demo-api -n demo-dev --kube-context lab" in release.reason
    assert ["status", "demo-api", "--namespace", "demo-dev", "--kube-context", "lab", "-o", "json"] in helm.calls


def test_interruptible_sleep_ends_at_once_when_the_run_is_cancelled():
    run_mod.reset_cancel()
    threading.Timer(0.2, run_mod.stop_all).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        run_mod.sleep(30)
    assert time.monotonic() - started < 2
    run_mod.reset_cancel()


# ---- 3. every run command takes SIGTERM/SIGINT promptly, with a summary ------------------------------

def _signal_after(proc: subprocess.Popen, delay: float, sig: int) -> tuple[int, float, str, str]:
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    return proc.returncode, time.monotonic() - sent, out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_smoke_stops_at_once_on_a_signal_with_a_summary(workspace, sig):
    """A route that never answers and a 60 s deadline: the signal ends the wait, exit 130, JSON summary."""
    proc = subprocess.Popen([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "smoke", "api",
                             "--deadline", "60", "--json"], cwd=workspace, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    code, took, out, err = _signal_after(proc, 1.5, sig)
    assert code == 130 and took < 5, err
    assert json.loads(out)["outcome"] == "failed" and "interrupted" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e9", "soon"])
def test_non_finite_or_absurd_timeouts_are_bad_input(workspace, value):
    for args in (["smoke", "api", "--deadline", value], ["handback", "--timeout", value]):
        res = run_process(["--topology", "topology.yaml", *args], cwd=workspace, timeout=20)
        assert res.code == 2 and len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err, (args, res.err)


# ---- 4. kill -9: no child left working beside the next run -------------------------------------------

def test_kill_9_of_buildplane_takes_its_build_child_with_it(workspace, tmp_path):
    pidfile = tmp_path / "child.pid"
    docker = FakeTool(tmp_path / "bin", "docker")
    docker.path.write_text(f'#!/bin/sh\n[ "$1 $2" = "buildx build" ] || {{ echo "unexpected: $*" >&2; exit 97; }}\n'
                           f"echo $$ > {pidfile}\nexec sleep 60\n")
    env = {**os.environ, "PATH": f"{docker.path.parent}:{os.environ['PATH']}"}
    text = Path("topology.yaml").read_text().replace("cache: {import: true, export: true}", "cache: {import: false, export: false}")
    Path("topology.yaml").write_text(text.replace("registry.example/team", f"127.0.0.1:{empty_registry()}/team"))
    seed_builder(env)
    proc = subprocess.Popen([sys.executable, "-m", "buildplane", "--topology", "topology.yaml", "up", "--mode", "dev",
                             "api", "--build-only"], cwd=workspace, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    child = int(pidfile.read_text())
    ticks = start_ticks(child)
    proc.kill()
    proc.wait(timeout=10)
    for _ in range(60):
        if start_ticks(child) != ticks:
            break
        time.sleep(0.05)
    assert start_ticks(child) != ticks, "the build child outlived a kill -9 of buildplane"


def empty_registry() -> int:
    """A loopback registry with no manifests (404 for each): the build's freshness check says `build`."""
    import http.server

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/v2/" else 404)
            self.end_headers()
        do_HEAD = do_GET

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def _dead_owner() -> tuple[int, int]:
    """A PID and start time of a process that has exited (the killed run)."""
    p = subprocess.Popen(["true"])
    pid = p.pid
    ticks = start_ticks(pid)
    p.wait()
    return pid, ticks or 1


def _orphan(ledger: Path, argv: list[str], protected: bool) -> subprocess.Popen:
    proc = subprocess.Popen(argv, start_new_session=True)
    owner, owner_ticks = _dead_owner()
    ledger.mkdir(parents=True, exist_ok=True)
    (ledger / f"{proc.pid}.json").write_text(json.dumps({
        "pid": proc.pid, "ticks": start_ticks(proc.pid), "what": " ".join(argv), "protected": protected,
        "owner": owner, "owner_ticks": owner_ticks}))
    return proc


def test_next_run_stops_an_orphaned_build_and_waits_for_an_orphaned_helm(tmp_path):
    ledger = tmp_path / "children"
    build = _orphan(ledger, ["sleep", "60"], protected=False)
    helm = _orphan(ledger, ["sleep", "1.0"], protected=True)
    said: list[str] = []
    started = time.monotonic()
    children.reap_orphans(ledger, said.append, helm_wait_s=10)
    assert build.wait(timeout=5) == -signal.SIGTERM  # its process group was stopped
    assert helm.poll() == 0 and time.monotonic() - started >= 0.8  # waited for, never signalled
    assert any("waiting up to 10s for `sleep 1.0`" in s for s in said)
    assert any("stopped `sleep 60`" in s for s in said)
    assert list(ledger.iterdir()) == []


def test_a_concurrent_runs_children_are_not_orphans(tmp_path):
    ledger = tmp_path / "children"
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        children.record(ledger, proc.pid, "sleep 30", protected=False)  # owned by this (live) process
        children.reap_orphans(ledger, lambda m: None)
        assert proc.poll() is None and len(list(ledger.iterdir())) == 1
    finally:
        proc.kill()
        proc.wait()


def test_runner_records_a_child_while_it_runs_and_forgets_it_after(tmp_path):
    ledger = tmp_path / "children"
    tool = tmp_path / "peek"
    tool.write_text(f"#!/bin/sh\nsleep 0.3\necho $$\nls {ledger}\n")  # the record is written just after the start
    tool.chmod(0o755)
    pid, *listed = Runner(extra_path=[str(tmp_path)], ledger=ledger).run(["peek"], timeout=10).stdout.split()
    assert listed == [f"{pid}.json"]
    assert list(ledger.iterdir()) == []


# ---- 5-7. guards that cannot be walked around ---------------------------------------------------------

def _chart_in(namespace_template: str) -> None:
    Path("chart/templates/cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\n"
        f"  namespace: {namespace_template}\ndata:\n  a: b\n")


def real_helm() -> str:
    try:
        return Runner().which("helm")
    except Exception:
        missing_component("Helm is not on PATH (run `make provision`)")
        return ""


@pytest.mark.parametrize("template,values", [
    ("prod", "{}\n"),  # the chart itself names another namespace
    ("{{ .Values.ns | default .Release.Namespace }}", "ns: prod\n"),  # a values file does
])
def test_real_helm_rendering_into_another_namespace_is_refused(workspace, template, values):
    real_helm()
    _chart_in(template)
    Path("chart/values-dev.yaml").write_text(values)
    fake_docker = FakeTool(workspace / "bin", "docker").expect("buildx", "build", write_metadata=DIGEST)
    from fakes import run_up
    summary = run_up(workspace / "bin", targets=("api",))  # no kube context: real `helm template`, render only
    assert summary.exit_code == 3, summary.error
    assert "refused [rendered-namespace]" in summary.error and "ConfigMap/demo-api-cfg" in summary.error
    assert "'prod'" in summary.error and "demo/templates/cm.yaml" in summary.error
    assert not Path(".buildplane/rendered/dev-api.yaml").exists() and not fake_docker.unexpected()


def test_real_helm_cluster_scoped_object_refused_unless_the_target_allows_it(workspace):
    real_helm()
    Path("chart/templates/role.yaml").write_text(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: demo-reader\nrules: []\n")
    FakeTool(workspace / "bin", "docker").expect("buildx", "build", write_metadata=DIGEST)
    from fakes import run_up
    summary = run_up(workspace / "bin", targets=("api",))
    assert summary.exit_code == 3 and "ClusterRole/demo-reader" in summary.error and "cluster-scoped" in summary.error
    text = Path("topology.yaml").read_text()
    Path("topology.yaml").write_text(text.replace("    image: demo-api\n", "    image: demo-api\n    cluster_scoped: [ClusterRole]\n"))
    assert run_up(workspace / "bin", targets=("api",)).exit_code == 0


def test_rendered_namespace_is_checked_before_any_upgrade(tools):
    helm = FakeTool(tools["bin"], "helm").expect("version", "--short", stdout="v4.1.4\n")
    helm.expect("template", stdout=RENDERED.replace("  name: demo-api\n", "  name: demo-api\n  namespace: prod\n"))
    summary = up(tools)
    assert summary.exit_code == 3 and "into namespace 'prod'" in summary.error
    assert not [c for c in helm.calls if c[:1] == ["upgrade"]] and not helm.unexpected()


@pytest.mark.parametrize("digest", [
    "sha256:" + "ab" * 32 + ",namespace=prod", "sha256:" + "AB" * 32, "sha256:abc", "md5:" + "ab" * 16, ""])
def test_a_digest_that_is_not_sha256_hex_never_reaches_helm(tools, digest):
    FakeTool(tools["bin"], "docker").expect("buildx", "build", write_metadata=digest)
    summary = up(tools)
    assert summary.exit_code in (1, 3, 4)  # refused, or (empty) no digest at all
    assert not [c for c in tools["helm"].calls if c[:1] == ["upgrade"]]
    # Only the render beside the build reached Helm, with its stand-in digest; the bad one never did.
    for call in [c for c in tools["helm"].calls if c[:1] == ["template"]]:
        assert call[-1].endswith("-image-render.json")
    for values in Path(".buildplane/values").glob("*.json"):
        assert digest not in values.read_text() or not digest
    assert not Path(".buildplane/values/dev-api-image.json").exists()


def test_helm_never_sees_the_kube_selection_environment(tmp_path, monkeypatch):
    """Real Helm: `helm env` shows what it would use; the runner strips HELM_KUBE* and HELM_NAMESPACE."""
    real_helm()
    for key, value in {"HELM_KUBEAPISERVER": "https://evil.example:6443", "HELM_KUBETOKEN": "stolen-token",
                       "HELM_KUBEASUSER": "cluster-admin", "HELM_KUBECONTEXT": "prod", "HELM_NAMESPACE": "prod"}.items():
        monkeypatch.setenv(key, value)
    out = Runner().run(["helm", "env"], timeout=30).stdout
    assert "evil.example" not in out and "stolen-token" not in out and "cluster-admin" not in out
    assert 'HELM_NAMESPACE="default"' in out and 'HELM_KUBECONTEXT=""' in out


# ---- 12. release freshness is checked against the live release ---------------------------------------

def test_a_teammates_upgrade_of_the_same_release_is_not_called_fresh(tools):
    assert up(tools).exit_code == 0  # buildplane's release: revision 7
    helm = fake_helm(tools["bin"], upgrade={"stdout": "REVISION: 10\n"},
                     status=HELM_STATUS.replace('"version":7', '"version":9'))  # someone upgraded it since
    before = len(helm.calls)
    summary = up(tools)
    release = summary.results["release:api"]
    assert release.status.value == "succeeded" and "live release is deployed at revision 9" in release.reason
    assert [c[:2] for c in helm.calls[before:]].count(["upgrade", "--install"]) == 1
    # And when the live release is buildplane's own, one read-only `helm status` is all it costs.
    helm = fake_helm(tools["bin"], upgrade={"stdout": "REVISION: 11\n"},
                     status=HELM_STATUS.replace('"version":7', '"version":10'))
    before = len(helm.calls)
    assert up(tools).results["release:api"].status.value == "fresh"
    assert [c[0] for c in helm.calls[before:] if c[0] != "version"] == ["status"]


def test_a_full_state_dir_is_one_line_naming_it_and_leaves_no_temp_file(tools, monkeypatch):
    """ENOSPC while a run writes its record after the push: exit 1 with the state dir named, no traceback,
    and the atomic writer's temp file removed (it was left behind on every run)."""
    import errno as _errno
    import json as _json
    from pathlib import Path as _Path
    monkeypatch.setenv("PATH", f"{tools['bin']}:{os.environ['PATH']}")
    tools["docker"].expect("buildx", "build", write_metadata="sha256:" + "ab" * 32)
    real_dump = _json.dump

    def full_disk(obj, fh, **kw):
        if "inputs_digest" in obj:  # the build record, written once the image is pushed
            raise OSError(_errno.ENOSPC, os.strerror(_errno.ENOSPC))
        return real_dump(obj, fh, **kw)
    monkeypatch.setattr(_json, "dump", full_disk)
    from fakes import run_up
    summary = run_up(tools["bin"], targets=("api",), build_only=True)
    assert summary.exit_code == 1
    assert "No space left on device" in summary.error and ".buildplane/state" in summary.error
    assert "BUILDPLANE_STATE_DIR" in summary.error and "\n" not in summary.error
    assert not [p for p in _Path(".buildplane").rglob(".*") if p.is_file() and p.name.startswith(".build-")]
    assert not [p for p in _Path(".buildplane/state").glob(".*.json.*")]
