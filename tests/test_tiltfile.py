"""The real Tiltfile, evaluated by Starlark (starlark-pyo3) with Python stand-ins for Tilt's builtins.
It must define the resources the topology says, with flags, labels, trigger modes and deps; then each
resource's command is run against fake tools."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import starlark as sl

from conftest import ROOT
from fakes import FakeTool

PRELUDE = """
config = struct(define_bool=_define_bool, define_string_list=_define_string_list, parse=_parse,
                set_enabled_resources=_set_enabled_resources)
os = struct(path=struct(exists=_exists), getenv=_getenv)
TRIGGER_MODE_AUTO = "auto"
TRIGGER_MODE_MANUAL = "manual"
"""


class TiltfileError(Exception):
    pass


def evaluate(tilt_args: list[str], monkeypatch) -> tuple[dict, list[str]]:
    """Evaluate the Tiltfile as `tilt up ARGS` would. `config.parse()` keeps Tilt's documented rules (what the
    earlier stand-in ignored): a positional arg needs a setting declared `args=True`, an unknown flag fails
    the load. The result also says what the Tiltfile watches and which resources it enables."""
    monkeypatch.chdir(ROOT)
    resources: dict[str, dict] = {}
    flags: list[str] = []
    lists: dict[str, bool] = {}
    seen: dict[str, list] = {"watch": [], "enabled": []}

    def define_bool(name, *args, **kw):
        flags.append(name)

    def define_string_list(name, args=False, usage=""):
        lists[name] = args

    def parse():
        out: dict = {f: False for f in flags}
        positional = [a for a in tilt_args if not a.startswith("--")]
        for a in tilt_args:
            if a.startswith("--") and a[2:] not in flags and a[2:] not in lists:
                raise TiltfileError(f"Tiltfile load: unknown flag: {a}")
            if a.startswith("--") and a[2:] in flags:
                out[a[2:]] = True
        if positional:
            takes = [n for n, is_args in lists.items() if is_args]
            if not takes:
                raise TiltfileError("positional args were specified, but none were expected (no setting defined "
                                    "with args=True)")
            out[takes[0]] = positional
        return out

    def local(cmd, quiet=False, **kw):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60)
        return out.stdout

    def local_resource(name, cmd=None, deps=None, ignore=None, labels=None, resource_deps=None, trigger_mode=None,
                       auto_init=True, allow_parallel=False, links=None):
        resources[name] = {"cmd": cmd, "deps": deps, "ignore": ignore, "labels": labels, "resource_deps": resource_deps,
                           "trigger_mode": trigger_mode, "auto_init": auto_init, "links": links}

    module = sl.Module()
    for name, fn in {"_define_bool": define_bool, "_define_string_list": define_string_list, "_parse": parse,
                     "_set_enabled_resources": lambda names: seen["enabled"].extend(names),
                     "_exists": os.path.exists, "_getenv": os.getenv, "watch_file": lambda p: seen["watch"].append(p),
                     "local": local, "decode_json": json.loads, "local_resource": local_resource}.items():
        module.add_callable(name, fn)
    glb = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Json, sl.LibraryExtension.Print])
    source = PRELUDE + (ROOT / "Tiltfile").read_text()
    sl.eval(module, sl.parse("Tiltfile", source), glb)
    LAST.clear()
    LAST.update(seen)
    return resources, flags


LAST: dict[str, list] = {}


def test_positional_args_enable_just_those_resources(monkeypatch):
    resources, _ = evaluate(["runtime"], monkeypatch)
    assert LAST["enabled"] == ["runtime"]
    # an optional target named positionally is defined without its flag
    resources, _ = evaluate(["worker"], monkeypatch)
    assert "worker" in resources and LAST["enabled"] == ["worker"]
    resources, _ = evaluate([], monkeypatch)
    assert LAST["enabled"] == []  # nothing named: every resource stays enabled


def test_the_clis_flag_spelling_is_taken_and_an_unknown_flag_fails_the_load(monkeypatch):
    resources, _ = evaluate(["--remote-cache"], monkeypatch)
    assert resources["runtime"]["cmd"][-1] == "--remote-cache"
    with pytest.raises(Exception, match="unknown flag: --no-such-flag"):
        evaluate(["--no-such-flag"], monkeypatch)


def test_the_topology_file_is_watched_and_each_app_has_a_force_button(monkeypatch):
    resources, _ = evaluate([], monkeypatch)
    assert LAST["watch"] == ["ops/infra/topology/local.yaml"]
    force = resources["runtime-force"]
    assert force["cmd"][-5:] == ["up", "--mode", "dev", "runtime", "--force"]
    assert force["trigger_mode"] == "manual" and force["auto_init"] is False and force["labels"] == ["force"]


def test_default_resources(monkeypatch):
    resources, flags = evaluate([], monkeypatch)
    assert {"worker", "agent_server", "e2e"} <= set(flags)
    assert set(resources) == {"runtime", "portal", "runtime-force", "portal-force", "staging-mode", "deploy-mode",
                              "logs", "status-pods"}
    runtime = resources["runtime"]
    assert runtime["cmd"][-4:] == ["up", "--mode", "dev", "runtime"]
    assert runtime["labels"] == ["app"] and runtime["trigger_mode"] == "auto"
    # deps are the image inputs (and the release inputs) of the target
    assert "examples/fractalops/runtime" in runtime["deps"] and "charts/fractalops-runtime" in runtime["deps"]
    assert ".buildplane" in runtime["ignore"]
    assert resources["deploy-mode"]["trigger_mode"] == "manual" and resources["deploy-mode"]["labels"] == ["mode"]
    assert resources["deploy-mode"]["auto_init"] is False
    # the public routes show in the Tilt UI: the smoke URLs and the browser page
    assert runtime["links"] == ["http://127.0.0.1:18080/healthz"]
    assert resources["portal"]["links"] == ["http://127.0.0.1:18081/"]
    for name, args in (("logs", ["logs", "--tail", "200"]), ("status-pods", ["status", "--pods"])):
        r = resources[name]  # read-only diagnostics, on demand
        assert r["labels"] == ["diagnostics"] and r["trigger_mode"] == "manual" and r["auto_init"] is False
        assert r["cmd"][-len(args):] == args


def test_flags_add_optional_targets_and_the_smoke(monkeypatch):
    resources, _ = evaluate(["--worker", "--agent_server", "--e2e"], monkeypatch)
    assert {"worker", "agent_server", "portal-e2e-smoke"} <= set(resources)
    assert resources["worker"]["labels"] == ["optional"]
    smoke = resources["portal-e2e-smoke"]
    assert smoke["trigger_mode"] == "manual" and smoke["labels"] == ["smoke"] and smoke["resource_deps"] == ["portal"]
    assert smoke["cmd"][-3:] == ["smoke", "--browser", "portal"]
    assert smoke["auto_init"] is True  # so `tilt ci -- --e2e` runs it once after portal


def test_remote_cache_flag_reaches_every_building_resource(monkeypatch):
    plain, flags = evaluate([], monkeypatch)
    assert "remote_cache" in flags and all("--remote-cache" not in r["cmd"] for r in plain.values())
    cached, _ = evaluate(["--remote_cache"], monkeypatch)
    building = {n for n, r in cached.items() if "--remote-cache" in r["cmd"]}
    assert building == {"runtime", "portal", "runtime-force", "portal-force", "staging-mode"}
    assert cached["runtime"]["cmd"][-5:] == ["up", "--mode", "dev", "runtime", "--remote-cache"]


def test_resource_commands_run_against_fakes(monkeypatch, tmp_path):
    """Each app resource's command runs `buildplane up` — against a fake docker that records argv."""
    resources, _ = evaluate([], monkeypatch)
    docker = FakeTool(tmp_path / "bin", "docker")  # no registry answers, so no docker call is expected either
    env = {**os.environ, "PATH": f"{docker.path.parent}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "BUILDPLANE_STATE_DIR": str(tmp_path / "state")}
    env.pop("BUILDPLANE_TOPOLOGY", None)
    for name in ("runtime", "portal"):
        cmd = resources[name]["cmd"]
        # The topology points at a registry that is down: a clear exit 4, and docker never called.
        (tmp_path / "t.yaml").write_text((ROOT / "ops/infra/topology/local.yaml").read_text().replace(
            "127.0.0.1:15001/fractalops", "127.0.0.1:1/fractalops"))
        out = subprocess.run(cmd + ["--build-only"], cwd=ROOT, env={**env, "BUILDPLANE_TOPOLOGY": str(tmp_path / "t.yaml")},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 4, out.stderr
        assert "127.0.0.1:1 does not answer" in out.stderr
    assert docker.calls == []


def test_mode_and_smoke_resources_run_against_fakes(monkeypatch, tmp_path):
    """deploy-mode's command hands back to an Argo stand-in (fake tilt: not running); the e2e smoke's command
    drives the browser smoke against a portal that is down, failing with its last status."""
    from argo_standin import AppScript, ArgoStandIn, app_doc

    resources, _ = evaluate(["--e2e"], monkeypatch)
    bin_dir = tmp_path / "bin"
    tilt = FakeTool(bin_dir, "tilt")  # no Tilt was started through buildplane: no call to stop one
    kubectl, helm = FakeTool(bin_dir, "kubectl"), FakeTool(bin_dir, "helm")
    topo_text = (ROOT / "ops/infra/topology/local.yaml").read_text()
    apps = ["fractalops-api", "fractalops-portal", "fractalops-worker"]
    with ArgoStandIn({a: AppScript([app_doc(a)]) for a in apps}, token="t0ken") as argo:
        topo = tmp_path / "t.yaml"
        topo.write_text(topo_text.replace("https://127.0.0.1:18443", argo.url)
                        .replace("http://127.0.0.1:18081/", "http://127.0.0.1:9/"))
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGOCD_AUTH_TOKEN": "t0ken",
               "BUILDPLANE_TOPOLOGY": str(topo), "HOME": str(tmp_path), "BUILDPLANE_STATE_DIR": str(tmp_path / "state")}
        out = subprocess.run(resources["deploy-mode"]["cmd"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert argo.violations == [] and len(argo.calls("GET")) == 3
    assert tilt.calls == [] and kubectl.calls == [] and helm.calls == []
    assert "Tilt is not running" in out.stderr
    smoke = subprocess.run(resources["portal-e2e-smoke"]["cmd"] + ["--deadline", "1"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    if smoke.returncode == 4:  # no Chromium on this machine: the fix is named
        assert "no Chromium found" in smoke.stderr
    else:
        assert smoke.returncode == 1 and "http://127.0.0.1:9/ did not answer 2xx within 1s" in smoke.stderr
