"""Every bad input exits 2 (3 for guard refusals) with ONE line naming file, line and key — no traceback."""
from __future__ import annotations

import pytest

from conftest import BASE_TOPOLOGY, run_process

T = "topology.yaml"


def edit(old: str, new: str) -> str:
    assert old in BASE_TOPOLOGY, old
    return BASE_TOPOLOGY.replace(old, new, 1)


# (case id, topology text or None for the base, CLI args, exit code, substrings the one line must contain)
CASES = [
    ("unknown-top-key", edit("name: demo", "name: demo\nnmae: x"), ["plan", "--mode", "dev"], 2,
     [f"{T}:3:", "nmae", "did you mean 'name'"]),
    ("unknown-target-key", edit("    image: demo-api", "    imgae: demo-api\n    image: demo-api"),
     ["plan", "--mode", "dev"], 2, [f"{T}:15:", "targets.api.imgae", "did you mean 'image'"]),
    ("unknown-mode-key", edit("  service_name: demo-buildplane", "  service_nme: x"), ["env"], 2,
     [f"{T}:30:", "telemetry.service_nme", "did you mean 'service_name'"]),
    ("unknown-registry-key", edit("  mirror: mirror.example:8083", "  mirorr: mirror.example:8083"), ["env"], 2,
     [f"{T}:5:", "registries.mirorr", "did you mean 'mirror'"]),
    ("unknown-cache-key", edit("cache: {import: true, export: true}", "cache: {imprt: true, export: true}"), ["env"], 2,
     [f"{T}:25:", "modes.dev.cache.imprt", "did you mean 'import'"]),
    ("unknown-argo-key", edit("token_env: ARGOCD_AUTH_TOKEN", "tokn_env: ARGOCD_AUTH_TOKEN"), ["env"], 2,
     [f"{T}:28:", "modes.deploy.argo.tokn_env", "did you mean 'token_env'"]),
    ("unknown-smoke-key", edit('status: 200}', 'stats: 200}'), ["env"], 2,
     [f"{T}:18:", "targets.api.smoke[0].stats", "did you mean 'status'"]),
    ("unknown-mode", edit("  staging: {", "  stging: {"), ["env"], 2, [f"{T}:26:", "modes.stging", "did you mean 'staging'"]),
    ("wrong-type-version", edit("version: 1", "version: one"), ["env"], 2, [f"{T}:1:", "version", "valid: 1"]),
    ("wrong-version-number", edit("version: 1", "version: 2"), ["env"], 2, [f"{T}:1:", "version", "valid: 1"]),
    ("wrong-type-name", edit("name: demo", "name: [a, b]"), ["env"], 2, [f"{T}:2:", "name", "expected a string"]),
    ("wrong-type-optional", edit("optional: true", "optional: maybe"), ["env"], 2,
     [f"{T}:23:", "targets.web.optional", "expected true or false"]),
    ("wrong-type-contexts", edit("contexts: [lab]", "contexts: lab"), ["env"], 2, [f"{T}:9:", "kube.contexts", "expected a list"]),
    ("wrong-type-status", edit("status: 200}", 'status: "ok"}'), ["env"], 2,
     [f"{T}:18:", "targets.api.smoke[0].status", "expected a whole number"]),
    ("wrong-type-release", edit("release: true}", "release: yes-please}"), ["env"], 2,
     [f"{T}:25:", "modes.dev.release", "expected true or false"]),
    ("wrong-type-timeout", edit("timeout_s: 60", "timeout_s: soon"), ["env"], 2,
     [f"{T}:28:", "modes.deploy.argo.timeout_s", "expected a number"]),
    ("negative-timeout", edit("timeout_s: 60", "timeout_s: -5"), ["env"], 2,
     [f"{T}:28:", "modes.deploy.argo.timeout_s", "valid: a number > 0"]),
    ("wrong-type-targets", edit("targets:\n  api:", "targets: []\nxtargets:\n  api:"), ["env"], 2,
     [f"{T}:11:", "targets", "expected a mapping"]),
    ("wrong-type-build-args", edit("    image: demo-web", "    image: demo-web\n    build_args: [A]"), ["env"], 2,
     [f"{T}:23:", "targets.web.build_args", "expected a mapping"]),
    ("wrong-type-build-arg-value", edit("    image: demo-web", "    image: demo-web\n    build_args: {N: 3}"), ["env"], 2,
     [f"{T}:23:", "targets.web.build_args.N", "expected a string"]),
    ("unknown-mode-values-key", edit("    values: [chart/values-dev.yaml]", "    values: [chart/values-dev.yaml]\n    mode_values: {stagign: []}"),
     ["env"], 2, [f"{T}:18:", "targets.api.mode_values.stagign", "did you mean 'staging'"]),
    ("missing-mode-values-file", edit("    values: [chart/values-dev.yaml]",
                                      "    values: [chart/values-dev.yaml]\n    mode_values:\n      staging: [chart/nope.yaml]"),
     ["env"], 2, [f"{T}:19:", "targets.api.mode_values.staging[0]", "values file chart/nope.yaml does not exist"]),
    ("missing-final", edit("  final: registry.example/team\n", ""), ["env"], 2, [f"{T}:3:", "registries.final", "required key is missing"]),
    ("missing-dockerfile", edit("    dockerfile: ctx/Dockerfile\n    image: demo-api", "    image: demo-api"), ["env"], 2,
     [f"{T}:12:", "targets.api.dockerfile", "required key is missing"]),
    ("missing-image", edit("    image: demo-web\n", ""), ["env"], 2, [f"{T}:19:", "targets.web.image", "required key is missing"]),
    ("missing-kube", edit("kube:\n  contexts: [lab]\n", ""), ["env"], 2, [f"{T}:1:", "kube", "required key is missing"]),
    ("missing-version", edit("version: 1\n", ""), ["env"], 2, ["version", "required key is missing"]),
    ("mode-without-namespace", edit("dev: {namespace: demo-dev, ", "dev: {"), ["env"], 2,
     [f"{T}:25:", "modes.dev.namespace", "required key is missing"]),
    ("staging-without-namespace", edit("staging: {namespace: demo-staging, ", "staging: {"), ["env"], 2,
     [f"{T}:26:", "modes.staging.namespace", "required key is missing"]),
    ("empty-contexts", edit("contexts: [lab]", "contexts: []"), ["env"], 2, [f"{T}:9:", "kube.contexts", "must not be empty"]),
    ("empty-targets", edit("targets:\n  api:", "targets: {}\nxx:\n  api:"), ["env"], 2, [f"{T}:11:", "targets"]),
    ("missing-dockerfile-file", edit("dockerfile: ctx/Dockerfile\n    image: demo-api", "dockerfile: ctx/Nope.Dockerfile\n    image: demo-api"),
     ["env"], 2, [f"{T}:14:", "targets.api.dockerfile", "Nope.Dockerfile does not exist"]),
    ("missing-context-dir", edit("    context: ctx\n    dockerfile: ctx/Dockerfile\n    image: demo-web",
                                 "    context: nowhere\n    dockerfile: ctx/Dockerfile\n    image: demo-web"),
     ["env"], 2, [f"{T}:20:", "targets.web.context", "does not exist"]),
    ("missing-chart-dir", edit("chart: chart", "chart: charts/none"), ["env"], 2,
     [f"{T}:16:", "targets.api.chart", "no Chart.yaml"]),
    ("missing-values-file", edit("values: [chart/values-dev.yaml]", "values: [chart/values-x.yaml]"), ["env"], 2,
     [f"{T}:17:", "targets.api.values[0]", "does not exist"]),
    ("unset-env", edit("final: registry.example/team", "final: ${BP_TEST_UNSET_VAR}/team"), ["env"], 2,
     [f"{T}:4:", "registries.final", "${BP_TEST_UNSET_VAR} is not set"]),
    ("yaml-syntax", edit("  final: registry.example/team", "  final: [registry.example/team"), ["env"], 2,
     [f"{T}:", "YAML syntax error"]),
    ("yaml-tab-indent", edit("  mirror: mirror.example:8083", "\tmirror: x"), ["env"], 2, [f"{T}:5:", "YAML syntax error"]),
    ("empty-file", "", ["env"], 2, [f"{T}:1:", "empty"]),
    ("only-comments", "# nothing here\n", ["env"], 2, [f"{T}:1:", "empty"]),
    ("not-a-mapping", "- a\n- b\n", ["env"], 2, [f"{T}:1:", "top level is a list", "expected a mapping"]),
    ("scalar-file", "just text\n", ["env"], 2, [f"{T}:1:", "top level is a string"]),
    ("duplicate-key", edit("name: demo", "name: demo\nname: again"), ["env"], 2, [f"{T}:3:", "duplicate key 'name'"]),
    ("duplicate-target", edit("  web:\n", "  api:\n"), ["env"], 2, [f"{T}:", "duplicate key 'api'"]),
    ("bad-tag-placeholder", edit('tag: "staging-{git_sha}"', 'tag: "staging-{branch}"'), ["env"], 2,
     [f"{T}:26:", "modes.staging.tag", "unknown placeholder {branch}", "{git_sha}"]),
    ("bad-tag-chars", edit('tag: "staging-{git_sha}"', 'tag: "staging/{git_sha}"'), ["env"], 2,
     [f"{T}:26:", "modes.staging.tag", "not be a valid image tag"]),
    ("bad-image-name", edit("image: demo-web", "image: Demo_Web!"), ["env"], 2, [f"{T}:22:", "targets.web.image", "not a valid image name"]),
    ("bad-target-name", edit("  web:\n", "  Web:\n"), ["env"], 2, [f"{T}:19:", "targets.Web", "lowercase"]),
    ("bad-namespace", edit("namespace: demo-dev", "namespace: Demo_Dev"), ["env"], 2,
     [f"{T}:25:", "modes.dev.namespace", "not a valid Kubernetes namespace"]),
    ("bad-smoke-url", edit('url: "http://127.0.0.1:9/healthz"', 'url: "ftp://x"'), ["env"], 2,
     [f"{T}:18:", "targets.api.smoke[0].url", "not an http(s) URL"]),
    ("bad-smoke-status", edit("status: 200}", "status: 99}"), ["env"], 2, [f"{T}:18:", "smoke[0].status", "100-599"]),
    ("bad-argo-server", edit('server: "https://argocd.example"', 'server: "argocd.example"'), ["env"], 2,
     [f"{T}:28:", "modes.deploy.argo.server", "not an http(s) URL"]),
    ("token-not-env-name", edit("token_env: ARGOCD_AUTH_TOKEN", "token_env: eyJhbGciOi.secret"), ["env"], 2,
     [f"{T}:28:", "modes.deploy.argo.token_env", "environment variable name"]),
    ("empty-argo-apps", edit("apps: [demo-api]", "apps: []"), ["env"], 2, [f"{T}:28:", "modes.deploy.argo.apps", "must not be empty"]),
    ("cache-without-registry", edit("  cache: cache.example:8082/team/buildcache\n", ""), ["env"], 2,
     [f"{T}:24:", "modes.dev.cache", "needs registries.cache"]),
    ("values-without-chart", edit("    image: demo-web", "    image: demo-web\n    values: [chart/values-dev.yaml]"),
     ["env"], 2, [f"{T}:23:", "targets.web.values", "need a chart"]),
    # CLI invocations
    ("cli-unknown-command", None, ["frobnicate"], 2, ["invalid choice", "frobnicate"]),
    ("cli-bad-mode", None, ["plan", "--mode", "prod"], 2, ["--mode", "invalid choice", "prod"]),
    ("cli-missing-mode", None, ["plan"], 2, ["--mode", "required"]),
    ("cli-unknown-flag", None, ["plan", "--mode", "dev", "--fast"], 2, ["unrecognized arguments: --fast"]),
    ("cli-unknown-target", None, ["plan", "--mode", "dev", "apl"], 2, [f"{T}:", "no target 'apl'", "did you mean 'api'"]),
    ("cli-missing-topology", None, ["--topology", "nope.yaml", "plan", "--mode", "dev"], 2, ["nope.yaml", "not found"]),
    ("cli-topology-is-dir", None, ["--topology", "ctx", "env"], 2, ["ctx", "is a directory"]),
    ("cli-bad-format", None, ["env", "--format", "xml"], 2, ["--format", "invalid choice"]),
    ("cli-build-only-and-apply", None, ["plan", "--mode", "staging", "--build-only", "--apply"], 2, ["--build-only and --apply"]),
    ("cli-deploy-with-targets", None, ["plan", "--mode", "deploy", "api"], 2, ["deploy mode takes no targets"]),
    # Guard refusals: exit 3, naming the rule
    ("guard-context-not-allowed", None, ["plan", "--mode", "dev", "--kube-context", "prod-cluster"], 3,
     ["kube-context-allow-list", "prod-cluster", "lab"]),
    ("guard-protected-namespace", None, ["plan", "--mode", "dev", "--namespace", "prod"], 3, ["protected-namespace", "prod"]),
    ("guard-foreign-namespace", None, ["plan", "--mode", "dev", "--namespace", "other"], 3, ["mode-namespace", "demo-dev"]),
    ("guard-staging-protected", None, ["plan", "--mode", "staging", "--apply", "--namespace", "prod"], 3, ["protected-namespace"]),
    ("guard-immutable-tag", edit('tag: "dev-{git_sha}-{digest12}"', 'tag: "v1.2.3"'), ["plan", "--mode", "dev"], 3,
     ["immutable-tag", "v1.2.3"]),
    ("guard-protected-dev-namespace", edit("namespace: demo-dev", "namespace: prod"), ["plan", "--mode", "dev"], 3,
     ["protected-namespace"]),
]


@pytest.mark.parametrize("case_id,text,args,code,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input(workspace, run_cli, case_id, text, args, code, needles, monkeypatch):
    monkeypatch.delenv("BP_TEST_UNSET_VAR", raising=False)
    if text is not None:
        (workspace / T).write_text(text)
    res = run_cli("--topology", T, *args) if not args[0].startswith("--topology") else run_cli(*args)
    assert res.code == code, res.err
    lines = res.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {res.err!r}"
    assert "Traceback" not in res.err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert res.out == ""
    # Nothing was run: no state written for a refused or bad run.
    assert not (workspace / ".buildplane" / "builds").exists()


def test_at_least_forty_cases():
    assert len(CASES) >= 40


def test_bad_input_as_a_real_process_has_no_traceback(workspace):
    (workspace / T).write_text(edit("name: demo", "name: demo\nnmae: x"))
    res = run_process(["--topology", T, "up", "--mode", "dev"], cwd=workspace)
    assert res.code == 2
    assert res.err.count("\n") == 1 and "Traceback" not in res.err and "did you mean 'name'" in res.err


def test_secret_in_unset_env_is_never_echoed(workspace, run_cli, monkeypatch):
    monkeypatch.setenv("BP_SECRET", "hunter2-very-secret")
    (workspace / T).write_text(edit("final: registry.example/team", "final: ${BP_SECRET}/team\n  nope: ${BP_SECRET}"))
    res = run_cli("--topology", T, "env")
    assert res.code == 2 and "hunter2" not in res.err
