"""Route smoke and the Playwright browser smoke, against pages served on loopback."""
from __future__ import annotations

import json
import os
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, missing_component, run_process
from conftest import RENDERED
from fakes import FakeTool
from fakes import DIGEST, up
from buildplane.state import StateDir
from buildplane.steps.base import RunContext, Status
from buildplane.steps.browser import find_chromium
from buildplane.steps.smoke import SmokeStep
from buildplane.topology.model import SmokeRoute
from buildplane.errors import Missing

HEALTHY = b"<!doctype html><html><body><div id='app'>FractalOps portal</div></body></html>"
CONSOLE_ERROR = b"<!doctype html><html><body><div id='app'>x</div><script>console.error('boom: api unreachable')</script></body></html>"
NO_APP = b"<!doctype html><html><body><div id='other'>x</div></body></html>"


class Pages:
    """/healthy, /500, /console-error, /no-app, /redirect, /slow (503 for `slow_s`, then healthy), /never (always 503)."""

    def __init__(self, slow_s: float = 2.0) -> None:
        self.started = time.monotonic()
        pages = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?")[0]
                if path in ("/healthy", "/healthz"):
                    return self._send(200, HEALTHY if path == "/healthy" else b"ok")
                if path == "/console-error":
                    return self._send(200, CONSOLE_ERROR)
                if path == "/no-app":
                    return self._send(200, NO_APP)
                if path == "/redirect":
                    return self._send(302, b"", {"Location": "/healthz"})
                if path == "/slow" and time.monotonic() - pages.started > slow_s:
                    return self._send(200, HEALTHY)
                if path == "/favicon.ico":  # browsers ask for it on their own; its 404 must not fail the smoke
                    return self._send(404, b"")
                return self._send(500 if path == "/500" else 503, b"<html><body>down</body></html>")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pages():
    p = Pages()
    yield p
    p.close()


def run_route_smoke(step: SmokeStep, client=None):
    return step.run(RunContext(state=StateDir(Path(".buildplane")), log=lambda m: None, http=client))


def smoke(url: str, deadline: float = 1.0, **route) -> object:
    return run_route_smoke(SmokeStep("api", (SmokeRoute(url=url, **route),), deadline))


def test_route_passes_with_status_text_and_latency(pages):
    result = smoke(pages.url + "/healthz", status=200, text="ok")
    assert result.status == Status.SUCCEEDED
    route = result.facts_json()["routes"][0]
    assert route["ok"] and route["status"] == 200 and route["attempts"] == 1 and route["latency_ms"] > 0


def test_a_500_fails_at_the_deadline_with_the_last_status(pages):
    result = smoke(pages.url + "/500", deadline=0.6)
    assert result.status == Status.FAILED
    assert result.facts_json()["routes"][0]["attempts"] > 1
    assert "status 500, expected 200" in result.reason and "within 0.6s" in result.reason


def test_missing_body_text_fails(pages):
    result = smoke(pages.url + "/healthz", text="FractalOps", deadline=0.3)
    assert result.status == Status.FAILED and "lacks 'FractalOps'" in result.reason


def test_redirects_only_when_asked(pages):
    assert "redirect to /healthz" in smoke(pages.url + "/redirect", deadline=0.3).reason
    assert smoke(pages.url + "/redirect", follow_redirects=True).status == Status.SUCCEEDED


def test_route_coming_up_late_passes_within_the_deadline(pages):
    result = smoke(pages.url + "/slow", deadline=10)
    assert result.status == Status.SUCCEEDED and result.facts_json()["routes"][0]["attempts"] > 1


def test_route_never_up_fails_with_the_last_status_seen(pages):
    result = smoke(pages.url + "/never", deadline=1.0)
    assert result.status == Status.FAILED and "status 503, expected 200" in result.reason


def test_tls_is_verified():
    # A self-signed name no CA vouches for: the smoke must not accept it silently.
    transport = httpx.MockTransport(lambda req: (_ for _ in ()).throw(httpx.ConnectError("CERTIFICATE_VERIFY_FAILED")))
    with httpx.Client(transport=transport) as client:
        result = run_route_smoke(SmokeStep("api", (SmokeRoute(url="https://api.dev.example/healthz"),), 0.2), client)
    assert result.status == Status.FAILED and "CERTIFICATE_VERIFY_FAILED" in result.reason


def test_smoke_fails_the_dev_pipeline(pages, workspace, monkeypatch):
    """Wired into `up`: a release whose route does not answer makes the run fail (exit 1)."""
    topo = Path("topology.yaml").read_text().replace("http://127.0.0.1:9/healthz", pages.url + "/500")
    Path("topology.yaml").write_text(topo.replace("dev: {namespace", "dev: {smoke_deadline_s: 0.3, namespace"))
    kc = workspace / "kubeconfig"
    kc.write_text("apiVersion: v1\ncurrent-context: lab\ncontexts: [{name: lab, context: {cluster: lab}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(kc))
    bin_dir = workspace / "bin"
    tools = {"bin": bin_dir, "docker": FakeTool(bin_dir, "docker").expect("buildx", "build", write_metadata=DIGEST),
             "helm": FakeTool(bin_dir, "helm").expect("version", "--short", stdout="v4.1.4\n").expect(
                 "upgrade", "--install", stdout="REVISION: 1\n").expect("template", stdout=RENDERED)}
    summary = up(tools, http=None)  # the real client, to the real pages
    assert summary.exit_code == 1
    t = summary.to_json()["targets"]["api"]
    assert (t["release"], t["smoke"]) == ("applied", "failed")
    assert "api: smoke failed" in summary.error and "status 500" in summary.error


# -- browser ---------------------------------------------------------------------------------------

@pytest.fixture
def chromium():
    try:
        return find_chromium()
    except Missing as exc:
        missing_component(exc.message)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def browser_topology(url: str) -> None:
    Path("topology.yaml").write_text(Path("topology.yaml").read_text().replace(
        "    optional: true\n", f"    optional: true\n    browser: {{url: \"{url}\", selector: \"#app\"}}\n"))


@pytest.mark.browser
def test_browser_healthy_portal_writes_the_screenshot(pages, workspace, run_cli, chromium):
    browser_topology(pages.url + "/healthy")
    res = run_cli("--topology", "topology.yaml", "smoke", "--browser", "web", "--deadline", "20", "--json")
    assert res.code == 0, res.err
    shot = Path("output/playwright/tilt-web-smoke.png")
    width, height = png_size(shot)
    assert width > 100 and height > 100 and shot.stat().st_size > 1000
    doc = json.loads(res.out)["targets"]["web"]
    assert doc["smoke"] == "passed" and doc["selector_found"] and doc["console_errors"] == []


@pytest.mark.browser
@pytest.mark.parametrize("page,expect", [
    ("/500", "did not answer 2xx within 3s"),
    ("/console-error", "console error(s), first: boom: api unreachable"),
    ("/no-app", "selector '#app' never appeared"),
    ("/never", "last status 503"),
])
def test_browser_failures_are_named(pages, workspace, run_cli, chromium, page, expect):
    browser_topology(pages.url + page)
    res = run_cli("--topology", "topology.yaml", "smoke", "--browser", "web", "--deadline", "3", "--json")
    assert res.code == 1
    assert expect in res.err


@pytest.mark.browser
def test_browser_page_coming_up_late_passes(workspace, run_cli, chromium):
    pages = Pages(slow_s=3.0)
    try:
        browser_topology(pages.url + "/slow")
        res = run_cli("--topology", "topology.yaml", "smoke", "--browser", "web", "--deadline", "30", "--json")
    finally:
        pages.close()
    assert res.code == 0, res.err
    assert json.loads(res.out)["targets"]["web"]["attempts"] > 1


def test_no_chromium_is_exit_4_with_the_fix(workspace, run_cli, monkeypatch):
    browser_topology("http://127.0.0.1:9/")
    monkeypatch.setenv("PATH", str(workspace))  # no chromium anywhere
    monkeypatch.delenv("BUILDPLANE_CHROMIUM", raising=False)
    res = run_cli("--topology", "topology.yaml", "smoke", "--browser")
    assert res.code == 4
    assert "no Chromium found" in res.err and "BUILDPLANE_CHROMIUM" in res.err
    monkeypatch.setenv("BUILDPLANE_CHROMIUM", "/nonexistent/chrome")
    assert "is not an executable file" in run_cli("--topology", "topology.yaml", "smoke", "--browser").err


def test_no_playwright_is_exit_4_with_the_fix_never_a_traceback(workspace, tmp_path):
    """As after a plain install where Playwright cannot be imported: one line, exit 4, nothing started."""
    shadow = tmp_path / "shadow" / "playwright"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'playwright'\", name='playwright')\n")
    browser_topology("http://127.0.0.1:9/")
    env = {"PYTHONPATH": f"{shadow.parent}{os.pathsep}{ROOT}", "BUILDPLANE_CHROMIUM": "/bin/true",
           "BUILDPLANE_STATE_DIR": str(tmp_path / "state")}
    res = run_process(["--topology", "topology.yaml", "smoke", "--browser", "web"], workspace, env)
    assert res.code == 4, res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1
    assert "needs Playwright" in res.err and "make install" in res.err
    assert not (tmp_path / "state" / "events.jsonl").exists()  # refused before the run began


def test_a_chromium_that_does_not_start_is_exit_4(workspace, tmp_path):
    browser_topology("http://127.0.0.1:9/")
    env = {"BUILDPLANE_CHROMIUM": "/bin/false", "BUILDPLANE_STATE_DIR": str(tmp_path / "state")}
    res = run_process(["--topology", "topology.yaml", "smoke", "--browser", "web", "--deadline", "2"], workspace, env)
    assert res.code == 4, res.err
    assert "Traceback" not in res.err and "Chromium at /bin/false did not start" in res.err
