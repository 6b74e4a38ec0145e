"""Plan, contract and guards on the real lab topology and the example app."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from buildplane import contract
from buildplane.errors import Refused
from buildplane.guards import check_kubectl
from buildplane.topology import load
from conftest import ROOT, run_process

LAB = "ops/infra/topology/lxc-pve-lab.yaml"


@pytest.fixture
def at_root(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("BUILDPLANE_KUBE_CONTEXT", raising=False)
    return ROOT


def plan_json(run_cli, *args):
    res = run_cli("--topology", LAB, "plan", "--json", *args)
    assert res.code == 0, res.err
    return json.loads(res.out)


def test_dev_plan_buildx_uses_the_mode_cache_ref(at_root, run_cli):
    plan = plan_json(run_cli, "--mode", "dev", "runtime", "--kube-context", "lxc-pve-lab", "--remote-cache")
    build = plan["steps"][0]
    argv = build["argv"]
    ref = "nexus.nexus.svc:8082/fractalops/buildcache/dev/runtime"
    assert argv[:3] == ["docker", "buildx", "build"] and "--push" in argv
    # nexus.nexus.svc:8082 is in registries.plain_http and not on loopback: BuildKit is told so
    assert argv[argv.index("--cache-from") + 1] == f"type=registry,ref={ref},registry.insecure=true"
    assert argv[argv.index("--cache-to") + 1] == f"type=registry,ref={ref},mode=max,registry.insecure=true"
    assert argv[argv.index("--target") + 1] == "runtime"
    assert "BASE_REGISTRY=nexus.nexus.svc:8083" in argv
    tags = [argv[i + 1] for i, a in enumerate(argv) if a == "--tag"]
    assert len(tags) == 1 and tags[0].startswith("ghcr.io/yamonco/fractalops-runtime:bp-")  # one push per image
    assert any(n.startswith("registry build cache for dev: import + export (from --remote-cache)") for n in plan["notes"])


def test_lxc_pve_lab_dev_cache_is_off_with_one_switch_to_turn_it_on(at_root, run_cli, monkeypatch):
    plan = plan_json(run_cli, "--mode", "dev", "runtime", "--build-only")
    argv = plan["steps"][0]["argv"]
    assert "--cache-from" not in argv and "--cache-to" not in argv
    note = next(n for n in plan["notes"] if n.startswith("registry build cache for dev"))
    assert note.startswith("registry build cache for dev: off (from modes.dev.cache in ops/infra/topology/lxc-pve-lab.yaml)")
    assert "--remote-cache" in note and "BUILDPLANE_REMOTE_CACHE=true" in note and "--remote_cache" in note
    monkeypatch.setenv("BUILDPLANE_REMOTE_CACHE", "true")
    argv = plan_json(run_cli, "--mode", "dev", "runtime", "--build-only")["steps"][0]["argv"]
    assert "type=registry,ref=nexus.nexus.svc:8082/fractalops/buildcache/dev/runtime,registry.insecure=true" in argv
    text = run_cli("--topology", LAB, "plan", "--mode", "dev", "runtime", "--build-only").out
    assert "note: registry build cache for dev: import + export (from $BUILDPLANE_REMOTE_CACHE)" in text
    monkeypatch.setenv("BUILDPLANE_REMOTE_CACHE", "sometimes")
    bad = run_cli("--topology", LAB, "plan", "--mode", "dev")
    assert bad.code == 2 and "$BUILDPLANE_REMOTE_CACHE='sometimes': valid: true or false" in bad.err


def test_dev_plan_helm_targets_dev_namespace_with_allowed_context(at_root, run_cli):
    plan = plan_json(run_cli, "--mode", "dev", "runtime", "--kube-context", "lxc-pve-lab")
    release = next(s for s in plan["steps"] if s["kind"] == "release")
    argv = release["argv"]
    assert argv[:4] == ["helm", "upgrade", "--install", "fractalops-runtime"]
    assert argv[argv.index("--namespace") + 1] == "fractalops-dev"
    assert argv[argv.index("--kube-context") + 1] == "lxc-pve-lab"
    assert "--wait" in argv and "--history-max" in argv
    # after its build; nothing was built here yet, so its render runs beside the build (steps/render.py)
    assert release["after"] == ["build:runtime", "render:runtime"]
    render = next(s for s in plan["steps"] if s["kind"] == "render")
    assert render["after"] == [] and render["argv"][:3] == ["helm", "template", "fractalops-runtime"]
    assert render["argv"][-1].endswith("dev-runtime-image-render.json")


def test_staging_plan_uses_staging_cache_scope_and_no_release(at_root, run_cli):
    plan = plan_json(run_cli, "--mode", "staging")
    assert [s["kind"] for s in plan["steps"]] == ["build", "tag", "build", "tag"] and plan["targets"] == ["runtime", "portal"]
    argv = plan["steps"][2]["argv"]
    assert "type=registry,ref=nexus.nexus.svc:8082/fractalops/buildcache/staging/portal,registry.insecure=true" in argv
    assert any("name a target (or pass --apply)" in n for n in plan["notes"])
    assert plan["steps"][2]["image"].split(":")[-1].startswith("staging-")


def test_dev_without_cache_has_no_cache_flags(at_root, run_cli, tmp_path):
    text = (ROOT / LAB).read_text().replace("cache: {import: true, export: true}\n    release: true",
                                            "cache: {import: false, export: false}\n    release: true")
    topo = tmp_path / "t.yaml"
    topo.write_text(text)
    res = run_cli("--topology", str(topo), "plan", "--mode", "dev", "runtime", "--json", "--build-only")
    argv = json.loads(res.out)["steps"][0]["argv"]
    assert "--cache-from" not in argv and "--cache-to" not in argv


def test_default_targets_skip_optional_ones(at_root, run_cli):
    plan = plan_json(run_cli, "--mode", "dev", "--build-only")
    assert plan["targets"] == ["runtime", "portal"]


def test_without_a_context_releases_are_rendered(at_root, run_cli):
    plan = plan_json(run_cli, "--mode", "dev", "portal")
    release = next(s for s in plan["steps"] if s["kind"] == "release")
    assert release["argv"][:2] == ["helm", "template"] and release["applied"] is False


def test_kubeconfig_current_context_outside_allow_list_is_refused(at_root, run_cli, tmp_path, monkeypatch):
    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\ncurrent-context: prod\ncontexts: [{name: prod, context: {cluster: p}}]\n")
    monkeypatch.setenv("KUBECONFIG", str(kc))
    res = run_cli("--topology", LAB, "plan", "--mode", "dev")
    assert res.code == 3 and "kube-context-allow-list" in res.err and "kubeconfig" in res.err


def test_deploy_plan_lists_argo_calls(at_root, run_cli):
    plan = plan_json(run_cli, "--mode", "deploy")
    assert [s["id"] for s in plan["steps"]] == ["stop-tilt", "handback:fractalops-api", "handback:fractalops-portal",
                                                "handback:fractalops-worker"]
    handback = next(s for s in plan["steps"] if s["target"] == "fractalops-api")
    assert handback["after"] == ["stop-tilt"]
    assert "GET https://argocd.lxc-pve.lab/api/v1/applications/fractalops-api?refresh=normal" in handback["http"]


def test_contract_names(at_root):
    topo = load(LAB)
    assert contract.cache_ref(topo, "dev", "runtime") == "nexus.nexus.svc:8082/fractalops/buildcache/dev/runtime"
    assert contract.image_ref(topo, "portal", "x") == "ghcr.io/yamonco/fractalops-portal:x"
    assert contract.render_tag("dev-{git_sha}-{digest12}-{mode}-{target}", git_sha="abc", inputs_digest="sha256:" + "f" * 64,
                               mode="dev", target="runtime") == "dev-abc-ffffffffffff-dev-runtime"
    assert contract.content_tag("sha256:" + "0123456789abcdef" * 4) == "bp-0123456789abcdef"


def test_env_sh_is_quoted_and_complete(at_root, run_cli):
    res = run_cli("env", LAB, "--mode", "dev")
    assert res.code == 0
    env = dict(line.removeprefix("export ").split("=", 1) for line in res.out.splitlines())
    assert env["BUILDPLANE_CACHE_REF_RUNTIME"] == "nexus.nexus.svc:8082/fractalops/buildcache/dev/runtime"
    assert env["BUILDPLANE_CACHE_REF_DAYTONA_WORKSPACE"].endswith("/dev/daytona-workspace")
    assert env["BUILDPLANE_NAMESPACE"] == "fractalops-dev"
    assert env["BUILDPLANE_REGISTRY_FINAL"] == "ghcr.io/yamonco"


def test_env_json_and_the_ops_script_agree(at_root, run_cli):
    res = run_cli("env", LAB, "--format", "json")
    script = run_process([], cwd=ROOT)  # sanity: the module runs
    assert script.code == 2
    import subprocess, sys
    out = subprocess.run([sys.executable, "ops/infra/build_plane_env.py", LAB, "--format", "json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout) == json.loads(res.out)


def test_sh_quoting_of_unsafe_values(workspace, run_cli):
    text = (workspace / "topology.yaml").read_text().replace("name: demo\n", "name: \"demo; rm -rf /\"\n", 1)
    (workspace / "topology.yaml").write_text(text)
    res = run_cli("--topology", "topology.yaml", "env")
    assert "export BUILDPLANE_NAME='demo; rm -rf /'" in res.out


@pytest.mark.parametrize("argv", [["kubectl", "set", "image", "deploy/x", "a=b"], ["kubectl", "patch", "x"],
                                  ["kubectl", "edit", "x"], ["kubectl", "apply", "-f", "x"], ["kubectl", "delete", "pod", "x"],
                                  ["kubectl", "config", "use-context", "x"], ["kubectl", "-n", "a", "scale", "x"]])
def test_mutating_kubectl_is_refused(argv):
    with pytest.raises(Refused) as err:
        check_kubectl(argv)
    assert err.value.rule == "kubectl-read-only"


@pytest.mark.parametrize("argv", [["kubectl", "get", "pods"], ["kubectl", "-n", "x", "logs", "p"],
                                  ["kubectl", "config", "current-context"]])
def test_read_only_kubectl_is_allowed(argv):
    assert check_kubectl(argv) is None
    # The same command line with its verb swapped for a mutating one is refused: the check reads the verb.
    verb = next(i for i, a in enumerate(argv) if a in ("get", "logs", "config"))
    mutated = [*argv[:verb], "delete", *argv[verb + 1:]]
    with pytest.raises(Refused):
        check_kubectl(mutated)


def test_every_command_has_help_with_an_example(run_cli):
    from buildplane.cli import build_parser
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert "example:" in p.format_help(), name


def test_each_mode_smokes_its_own_routes(at_root, run_cli):
    """Staging never passes on dev's health: `{namespace}` in a route's URL names the mode's own host."""
    for mode, host in (("dev", "api.fractalops-dev.lxc-pve.lab"), ("staging", "api.fractalops-staging.lxc-pve.lab")):
        plan = plan_json(run_cli, "--mode", mode, "runtime", "--apply", "--kube-context", "lxc-pve-lab")
        smoke = next(s for s in plan["steps"] if s["kind"] == "smoke")
        assert json.dumps(smoke).count(f"https://{host}/healthz") >= 1, smoke
        assert "fractalops-dev" not in json.dumps(smoke) or mode == "dev"


def test_a_route_for_one_mode_is_checked_in_that_mode_only():
    from buildplane.topology.model import SmokeRoute, Target
    t = Target(dockerfile="D", image="i", smoke=(SmokeRoute(url="http://a/{mode}"),
                                                  SmokeRoute(url="http://b/", modes=("staging",))))
    assert [r.url for r in t.smoke_for("dev", "ns-dev")] == ["http://a/dev"]
    assert [r.url for r in t.smoke_for("staging", "ns-st")] == ["http://a/staging", "http://b/"]


def test_staging_naming_a_target_releases_it_with_its_staging_values(at_root, run_cli):
    """`make staging-mode TILT_ARGS=runtime`: the explicit ask for a live check of runtime, in staging."""
    plan = plan_json(run_cli, "--mode", "staging", "runtime", "--kube-context", "lxc-pve-lab")
    release = next(s for s in plan["steps"] if s["kind"] == "release")
    argv = release["argv"]
    assert argv[argv.index("--namespace") + 1] == "fractalops-staging"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-f"] == [
        "charts/fractalops-runtime/values-staging.yaml", ".buildplane/values/staging-runtime-image.json"]
    assert [s["kind"] for s in plan_json(run_cli, "--mode", "staging", "runtime", "--build-only")["steps"]] == ["build", "tag"]
    refused = run_cli("--topology", LAB, "plan", "--mode", "staging", "runtime", "--namespace", "fractalops")
    assert refused.code == 3 and "protected-namespace" in refused.err


def test_the_smoke_command_takes_the_routes_of_the_mode_it_is_given(at_root):
    from buildplane.plan import smoke_plan
    from buildplane.topology import load
    topo = load(LAB)
    urls = {m: [r.url for s in smoke_plan(topo, ("runtime",), browser=False, deadline_s=5, mode=m).steps
                for r in s.routes] for m in ("dev", "staging")}
    assert urls == {"dev": ["https://api.fractalops-dev.lxc-pve.lab/healthz"],
                    "staging": ["https://api.fractalops-staging.lxc-pve.lab/healthz"]}


def test_staging_never_takes_devs_image_the_attestation_is_an_input(at_root, run_cli):
    """dev builds without an attestation, staging with buildx's default one: their content tags differ,
    so staging's freshness check never finds (and tags) dev's single manifest."""
    dev = next(s for s in plan_json(run_cli, "--mode", "dev", "runtime", "--build-only")["steps"] if s["kind"] == "build")
    stg = next(s for s in plan_json(run_cli, "--mode", "staging", "runtime", "--build-only")["steps"] if s["kind"] == "build")
    assert "--provenance=false" in dev["argv"] and "--provenance=false" not in stg["argv"]
    assert dev["inputs_digest"] != stg["inputs_digest"]
    tag = lambda s: s["argv"][s["argv"].index("--tag") + 1].rsplit(":", 1)[1]  # noqa: E731
    assert tag(dev) != tag(stg) and tag(dev).startswith("bp-")


def test_a_plain_http_final_registry_off_loopback_gets_its_push_said_to_buildkit(at_root, run_cli, tmp_path):
    """registries.plain_http reaches buildx: a push to a plain-HTTP registry (not loopback) is
    `--output type=registry,registry.insecure=true` instead of `--push`, which BuildKit would try over TLS."""
    text = Path(LAB).read_text().replace("final: ghcr.io/yamonco", "final: nexus.nexus.svc:8083/fractalops")
    topo = tmp_path / "plain.yaml"
    topo.write_text(text)
    res = run_cli("--topology", str(topo), "plan", "--mode", "staging", "runtime", "--build-only", "--json")
    assert res.code == 0, res.err
    argv = next(s for s in json.loads(res.out)["steps"] if s["kind"] == "build")["argv"]
    assert "--push" not in argv and argv[argv.index("--output") + 1] == "type=registry,registry.insecure=true"
