"""Every bad input exits 2 (3 for guard refusals) with ONE line naming file, line and key — no traceback."""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

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
    ("smoke-route-unknown-mode", edit("status: 200}", "status: 200, modes: [dev, prod]}"), ["env"], 2,
     [f"{T}:18:", "targets.api.smoke[0].modes[1]", "'prod' is not a mode that releases; valid: dev, staging"]),
    ("smoke-route-unknown-placeholder", edit('url: "http://127.0.0.1:9/healthz"', 'url: "http://{host}:9/healthz"'),
     ["env"], 2, [f"{T}:18:", "targets.api.smoke[0].url", "{host} is not a placeholder; valid: {mode}, {namespace}"]),
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


LONG = "x" * 60
NESTED = "name: demo\nx: " + "[" * 40 + "]" * 40 + "\n"
BOMB = "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i-1}"] * 9 if i else ["lol"] * 9) + "]\n" for i in range(9))
TWO_TARGETS = "  a-b:\n    context: ctx\n    dockerfile: ctx/Dockerfile\n    image: ab1\n  a_b:\n    context: ctx\n    dockerfile: ctx/Dockerfile\n    image: ab2\n"
SAME_RELEASE = ("  one:\n    context: ctx\n    dockerfile: ctx/Dockerfile\n    image: team-a/svc\n    chart: chart\n"
                "  two:\n    context: ctx\n    dockerfile: ctx/Dockerfile\n    image: team-b/svc\n    chart: chart\n")
PLAN = ["plan", "--mode", "dev"]

def _tar(name: str, data: bytes) -> bytes:
    import io
    import tarfile
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


SYNC_ON_ADD = edit("    smoke: [{url", "    sync: [{src: vendor.tar, dest: /srv/vendor.tar}]\n    smoke: [{url")

# Grown for #15 (hostile input). (case id, topology text or None, {extra file: text}, CLI args, env, exit code, needles)
MORE_CASES = [
    ("sync-rule-on-add-of-an-archive", SYNC_ON_ADD,
     {"ctx/Dockerfile": "FROM scratch\nCOPY app.txt /app.txt\nADD vendor.tar /srv/\n",
      "ctx/vendor.tar": _tar("inside.txt", b"unpacked by ADD\n")}, PLAN, {}, 2,
     [f"{T}:18:", "targets.api.sync[0].src", "unpacks the archive", "Use COPY"]),
    ("yaml-impossible-date", edit("name: demo", "name: 2024-02-30"), {}, ["env"], {}, 2, [f"{T}:2:", "read as a date", "quote it"]),
    ("yaml-date", edit("name: demo", "name: 2024-02-03"), {}, ["env"], {}, 2, [f"{T}:2:", "read as a date"]),
    ("yaml-timestamp", edit("name: demo", "name: 2024-02-03T10:00:00"), {}, ["env"], {}, 2, [f"{T}:2:", "read as a date"]),
    ("yaml-int-tag", edit("version: 1", "version: !!int abc"), {}, ["env"], {}, 2, [f"{T}:1:", "explicit YAML tag '!!int'"]),
    ("yaml-set-tag", edit("contexts: [lab]", "contexts: !!set {lab}"), {}, ["env"], {}, 2, [f"{T}:9:", "'!!set'"]),
    ("yaml-python-tag", edit("name: demo", "name: !!python/object/apply:os.system [id]"), {}, ["env"], {}, 2,
     [f"{T}:2:", "explicit YAML tag"]),
    ("yaml-custom-tag", edit("name: demo", "name: !vault abc"), {}, ["env"], {}, 2, [f"{T}:2:", "'!vault'"]),
    ("yaml-deep-nesting", "version: 1\n" + NESTED, {}, ["env"], {}, 2, [f"{T}:3:", "nested more than 32 levels"]),
    ("yaml-alias-bomb", "version: 1\n" + BOMB, {}, ["env"], {}, 2, [f"{T}:", "expand to more than 100000 values"]),
    ("yaml-huge-file", BASE_TOPOLOGY + "# " + "x" * (1 << 20) + "\n", {}, ["env"], {}, 2, [f"{T}:1:", "bytes; a topology is at most"]),
    ("yaml-not-utf8", None, {T: b"version: 1\nname: caf\xe9\n"}, ["env"], {}, 2, [T, "not UTF-8"]),
    ("version-true", edit("version: 1", "version: true"), {}, ["env"], {}, 2, [f"{T}:1:", "version", "valid: 1"]),
    ("version-float", edit("version: 1", "version: 1.0"), {}, ["env"], {}, 2, [f"{T}:1:", "version", "valid: 1"]),
    ("version-string", edit("version: 1", 'version: "1"'), {}, ["env"], {}, 2, [f"{T}:1:", "version", "valid: 1"]),
    ("release-underscore-from-image", edit("image: demo-api", "image: team/my_svc"), {}, ["env"], {}, 2,
     [f"{T}:", "targets.api.image", "'my_svc'", "not a valid release name"]),
    ("release-too-long", edit("image: demo-api", f"image: demo-api\n    release: {LONG}"), {}, ["env"], {}, 2,
     [f"{T}:", "targets.api.release"]),
    ("release-collision", edit("  api:\n", SAME_RELEASE + "  api:\n"), {}, ["env"], {}, 2,
     [f"{T}:", "targets.two.image", "'one' and 'two' would both release 'svc'"]),
    ("env-name-collision", edit("  api:\n", TWO_TARGETS + "  api:\n"), {}, ["env"], {}, 2,
     [f"{T}:", "targets.a_b", "BUILDPLANE_IMAGE_A_B"]),
    ("final-with-scheme", edit("final: registry.example/team", "final: https://ghcr.io/team"), {}, ["env"], {}, 2,
     [f"{T}:4:", "registries.final", "no scheme"]),
    ("final-uppercase-path", edit("final: registry.example/team", "final: ghcr.io/Team"), {}, ["env"], {}, 2,
     [f"{T}:4:", "registries.final", "lowercase path"]),
    ("mirror-with-scheme", edit("mirror: mirror.example:8083", "mirror: http://mirror.example:8083"), {}, ["env"], {}, 2,
     [f"{T}:5:", "registries.mirror"]),
    ("cache-with-space", edit("cache: cache.example:8082/team/buildcache", 'cache: "cache.example:8082/team/build cache"'),
     {}, ["env"], {}, 2, [f"{T}:6:", "registries.cache"]),
    ("plain-http-with-path", edit("plain_http: [cache.example:8082]", "plain_http: [cache.example:8082/team]"), {}, ["env"], {}, 2,
     [f"{T}:7:", "registries.plain_http[0]", "host[:port]"]),
    ("plain-http-with-scheme", edit("plain_http: [cache.example:8082]", 'plain_http: ["http://cache.example:8082"]'), {}, ["env"],
     {}, 2, [f"{T}:7:", "registries.plain_http[0]"]),
    ("auth-with-a-path", edit("plain_http: [cache.example:8082]",
                              'plain_http: [cache.example:8082]\n  auth: {ghcr.io/team: {username: bot, token_env: GHCR_TOKEN}}'),
     {}, ["env"], {}, 2, [f"{T}:8:", "registries.auth.ghcr.io/team", "host[:port]"]),
    ("auth-token-env-not-a-name", edit("plain_http: [cache.example:8082]",
                                       'plain_http: [cache.example:8082]\n  auth: {ghcr.io: {username: bot, token_env: "$GHCR"}}'),
     {}, ["env"], {}, 2, [f"{T}:8:", "registries.auth.ghcr.io.token_env"]),
    ("auth-with-the-token-itself", edit("plain_http: [cache.example:8082]",
                                        'plain_http: [cache.example:8082]\n  auth: {ghcr.io: {username: bot, token: ghp_x}}'),
     {}, ["env"], {}, 2, [f"{T}:8:", "registries.auth.ghcr.io"]),
    ("tag-v1", edit('tag: "dev-{git_sha}-{digest12}"', 'tag: "v1"'), {}, PLAN, {}, 3, ["immutable-tag", "api:v1"]),
    ("tag-four-part-version", edit('tag: "dev-{git_sha}-{digest12}"', 'tag: "1.2.3.4"'), {}, PLAN, {}, 3, ["immutable-tag"]),
    ("tag-latest", edit('tag: "dev-{git_sha}-{digest12}"', 'tag: "latest"'), {}, PLAN, {}, 3, ["immutable-tag", ":latest"]),
    ("tag-bare-number", edit('tag: "dev-{git_sha}-{digest12}"', 'tag: "7"'), {}, PLAN, {}, 3, ["immutable-tag"]),
    ("tag-empty", edit('tag: "dev-{git_sha}-{digest12}"', 'tag: ""'), {}, ["env"], {}, 2, [f"{T}:25:", "modes.dev.tag"]),
    ("deadline-nan", edit("dev: {namespace", "dev: {smoke_deadline_s: .nan, namespace"), {}, ["env"], {}, 2,
     [f"{T}:25:", "modes.dev.smoke_deadline_s"]),
    ("deadline-inf", edit("dev: {namespace", "dev: {smoke_deadline_s: .inf, namespace"), {}, ["env"], {}, 2,
     [f"{T}:25:", "modes.dev.smoke_deadline_s"]),
    ("argo-timeout-nan", edit("timeout_s: 60", "timeout_s: .nan"), {}, ["env"], {}, 2, [f"{T}:28:", "argo.timeout_s"]),
    ("argo-poll-inf", edit("timeout_s: 60", "timeout_s: 60, poll_s: .inf"), {}, ["env"], {}, 2, [f"{T}:28:", "argo.poll_s"]),
    ("history-max-zero", edit("dev: {namespace", "dev: {history_max: 0, namespace"), {}, ["env"], {}, 2,
     [f"{T}:25:", "modes.dev.history_max"]),
    ("namespace-too-long", edit("namespace: demo-dev", f"namespace: {'n' * 64}"), {}, ["env"], {}, 2,
     [f"{T}:25:", "modes.dev.namespace"]),
    ("helm-timeout-unit", edit("dev: {namespace", "dev: {helm_timeout: 5x, namespace"), {}, ["env"], {}, 2,
     [f"{T}:25:", "modes.dev.helm_timeout", "not a duration"]),
    ("cluster-scoped-not-a-list", edit("image: demo-api", "image: demo-api\n    cluster_scoped: ClusterRole"), {}, ["env"], {},
     2, [f"{T}:", "targets.api.cluster_scoped", "expected a list"]),
    ("build-arg-unset-env", edit("    image: demo-web", "    image: demo-web\n    build_args: {NPM_TOKEN: '${BP_TEST_UNSET_VAR}'}"),
     {}, ["env"], {}, 2, [f"{T}:", "${BP_TEST_UNSET_VAR} is not set"]),
    ("context-is-a-file", edit("    context: ctx\n    dockerfile: ctx/Dockerfile\n    image: demo-web",
                               "    context: ctx/Dockerfile\n    dockerfile: ctx/Dockerfile\n    image: demo-web"),
     {}, ["env"], {}, 2, [f"{T}:", "targets.web.context", "does not exist"]),
    ("contexts-number", edit("contexts: [lab]", "contexts: [1]"), {}, ["env"], {}, 2, [f"{T}:9:", "kube.contexts[0]", "expected a string"]),
    ("builder-unknown-key", BASE_TOPOLOGY + "builder: {netwrk: host}\n", {}, ["env"], {}, 2, [f"{T}:", "builder.netwrk", "did you mean 'network'"]),
    ("service-name-list", edit("service_name: demo-buildplane", "service_name: [a]"), {}, ["env"], {}, 2,
     [f"{T}:", "telemetry.service_name", "expected a string"]),
    ("token-env-with-space", edit("token_env: ARGOCD_AUTH_TOKEN", 'token_env: "A B"'), {}, ["env"], {}, 2,
     [f"{T}:28:", "token_env", "environment variable name"]),
    ("argo-ca-missing", edit("timeout_s: 60", "timeout_s: 60, ca_file: nope.pem"), {}, ["env"], {}, 2, [f"{T}:28:", "ca_file"]),
    ("browser-url-not-http", edit("    image: demo-web", '    image: demo-web\n    browser: {url: "file:///etc/passwd"}'),
     {}, ["env"], {}, 2, [f"{T}:", "targets.web.browser.url", "not an http(s) URL"]),
    ("targets-null", edit("targets:\n  api:", "targets:\nxx:\n  api:"), {}, ["env"], {}, 2, [f"{T}:", "targets"]),
    ("modes-without-dev", edit("  dev: {namespace", "  dve: {namespace"), {}, ["env"], {}, 2, [f"{T}:25:", "modes.dve", "did you mean 'dev'"]),
    ("dockerignore-bad-range", None, {"ctx/.dockerignore": "# fine\n[z-a]\n"}, PLAN, {}, 2,
     ["ctx/.dockerignore:2:", "'[z-a]' is not a valid pattern"]),
    ("dockerignore-bad-range-dockerfile", None, {"ctx/Dockerfile.dockerignore": "*.tmp\n[9-0]*\n"}, PLAN, {}, 2,
     ["ctx/Dockerfile.dockerignore:2:"]),
    # CLI and environment
    ("cli-deadline-nan", None, {}, ["smoke", "api", "--deadline", "nan"], {}, 2, ["--deadline", "'nan'"]),
    ("cli-deadline-inf", None, {}, ["smoke", "api", "--deadline", "inf"], {}, 2, ["--deadline", "'inf'"]),
    ("cli-timeout-nan", None, {}, ["handback", "--timeout", "nan"], {}, 2, ["--timeout", "'nan'"]),
    ("cli-timeout-huge", None, {}, ["handback", "--timeout", "1e12"], {}, 2, ["--timeout"]),
    ("cli-events-html-dir", None, {}, ["events", "stats", "--html", "ctx"], {}, 2, ["--html ctx: is a directory"]),
    ("cli-events-negative-n", None, {}, ["events", "tail", "-n", "-5"], {}, 2, ["-n -5"]),
    ("cli-events-bad-since", None, {}, ["events", "stats", "--since", "yesterday"], {}, 2, ["--since 'yesterday'"]),
    ("cli-events-tail-html", None, {}, ["events", "tail", "--html", "x.html"], {}, 2, ["events tail reads the local file"]),
    ("cli-status-deploy", None, {}, ["status", "--mode", "deploy"], {}, 2, ["--mode", "invalid choice"]),
    ("cli-explain-no-path", None, {}, ["explain"], {}, 2, ["required", "PATH"]),
    ("cli-tilt-bad-action", None, {}, ["tilt", "restart"], {}, 2, ["invalid choice", "restart"]),
    ("cli-resources-without-json", None, {}, ["resources"], {}, 2, ["--json"]),
    ("cli-env-bad-mode", None, {}, ["env", "--mode", "prod"], {}, 2, ["invalid choice", "prod"]),
    ("cli-up-build-only-apply", None, {}, ["up", "--mode", "staging", "--build-only", "--apply"], {}, 2, ["--build-only and --apply"]),
    ("env-remote-cache-bad", None, {}, PLAN, {"BUILDPLANE_REMOTE_CACHE": "maybe"}, 2, ["BUILDPLANE_REMOTE_CACHE", "maybe"]),
    ("env-state-dir-unwritable", None, {}, ["up", "--mode", "dev", "--build-only"], {"BUILDPLANE_STATE_DIR": "/proc/buildplane-state"},
     2, ["state dir /proc/buildplane-state is not writable", "BUILDPLANE_STATE_DIR"]),
    ("env-topology-missing", None, {}, ["env"], {"BUILDPLANE_TOPOLOGY": "nope.yaml", "_NO_TOPOLOGY_FLAG": "1"}, 2, ["nope.yaml", "not found"]),
    # sync rules (#14): each names the rule's line and key, and what would be valid
    ("sync-src-outside-context", edit("    smoke: [{url", "    sync: [{src: ../chart, dest: /app/}]\n    smoke: [{url"), {},
     PLAN, {}, 2, [f"{T}:18:", "targets.api.sync[0].src", "leaves the build context"]),
    ("sync-src-absolute", edit("    smoke: [{url", "    sync: [{src: /etc, dest: /app/}]\n    smoke: [{url"), {},
     PLAN, {}, 2, [f"{T}:18:", "targets.api.sync[0].src", "leaves the build context"]),
    ("sync-dest-relative", edit("    smoke: [{url", "    sync: [{src: app.txt, dest: app.txt}]\n    smoke: [{url"), {},
     PLAN, {}, 2, [f"{T}:18:", "targets.api.sync[0].dest", "is not absolute"]),
    ("sync-src-missing", edit("    smoke: [{url", "    sync: [{src: www/, dest: /www/}]\n    smoke: [{url"), {},
     PLAN, {}, 2, [f"{T}:18:", "targets.api.sync[0].src", "does not exist"]),
    ("sync-no-matching-copy", edit("    smoke: [{url", "    sync: [{src: app.txt, dest: /srv/app.txt}]\n    smoke: [{url"), {},
     PLAN, {}, 2, [f"{T}:18:", "targets.api.sync[0].src", "no COPY", "FROM at line 1", "expected `COPY app.txt /srv/app.txt`",
                   "app.txt → /app.txt (line 2)"]),
    ("sync-copy-of-another-stage", edit("    smoke: [{url", "    sync: [{src: app.txt, dest: /app.txt}]\n    smoke: [{url"),
     {"ctx/Dockerfile": "FROM scratch AS build\nCOPY app.txt /app.txt\nFROM scratch\nCOPY --from=build /app.txt /app.txt\n"},
     PLAN, {}, 2, [f"{T}:18:", "no COPY", "FROM at line 3"]),
    ("sync-missing-key", edit("    smoke: [{url", "    sync: [{src: app.txt}]\n    smoke: [{url"), {},
     PLAN, {}, 2, [f"{T}:18:", "targets.api.sync[0].dest", "required"]),
    ("sync-unknown-key", edit("    smoke: [{url", "    sync: [{src: app.txt, dst: /app.txt}]\n    smoke: [{url"), {},
     PLAN, {}, 2, [f"{T}:18:", "targets.api.sync[0].dst", "did you mean 'dest'"]),
    # the builder (#17)
    ("builder-name-bad", edit("telemetry:", "builder: {name: 'pool one'}\ntelemetry:"), {}, PLAN, {}, 2,
     [f"{T}:", "builder.name", "not a builder or Docker context name"]),
    ("builder-max-parallel-zero", edit("telemetry:", "builder: {max_parallel: 0}\ntelemetry:"), {}, PLAN, {}, 2,
     [f"{T}:", "builder.max_parallel", "valid: a number ≥ 1"]),
    ("builder-flag-bad", None, {}, PLAN + ["--builder", "a;b"], {}, 2, ["--builder 'a;b'", "not a builder"]),
    ("builder-env-bad", None, {}, PLAN, {"BUILDPLANE_BUILDER": "-x"}, 2, ["$BUILDPLANE_BUILDER '-x'"]),
    # diagnostics (#16): bad input before any cluster or Helm call
    ("logs-target-without-chart", None, {}, ["logs", "web"], {}, 2, ["targets.web.chart: not set", "targets with one: api"]),
    ("logs-unknown-target", None, {}, ["logs", "nope"], {}, 2, ["no target 'nope'"]),
    ("logs-since-bad", None, {}, ["logs", "--since", "5x"], {}, 2, ["--since '5x'", "30s, 10m"]),
    ("logs-tail-negative", None, {}, ["logs", "--tail", "-3"], {}, 2, ["--tail -3"]),
    ("restart-without-target", None, {}, ["restart"], {}, 2, ["TARGET"]),
    ("restart-unknown-target", None, {}, ["restart", "nope"], {}, 2, ["no target 'nope'"]),
    ("status-pods-unknown-target", None, {}, ["status", "--pods", "nope"], {}, 2, ["no target 'nope'"]),
    ("guard-restart-staging-without-apply", None, {}, ["restart", "--mode", "staging", "api"], {}, 3, ["staging-apply"]),
    ("guard-namespace-other-mode", None, {}, ["plan", "--mode", "staging", "--apply", "--namespace", "demo-dev"], {}, 3,
     ["mode-namespace", "demo-staging"]),
]

ALL_CASES = [(c[0], c[1], {}, c[2], {}, c[3], c[4]) for c in CASES] + MORE_CASES
MEMORY_LIMIT = 1 << 30  # address space per case: an alias bomb must not get near it
TIME_LIMIT_S = 20.0


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the workspace with its size and mtime: a bad input must leave all of them as they were."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize("case_id,text,files,args,env,code,needles", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_bad_input(workspace, case_id, text, files, args, env, code, needles):
    """A real process, bounded in memory and time: exit code, ONE line, no traceback, nothing written."""
    if text is not None:
        (workspace / T).write_text(text)
    for name, content in files.items():
        (workspace / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(workspace)
    environ = {k: v for k, v in os.environ.items() if k not in ("BP_TEST_UNSET_VAR", "BUILDPLANE_STATE_DIR")}
    environ.update({k: v for k, v in env.items() if not k.startswith("_")})
    flags = [] if args[0].startswith("--topology") or "_NO_TOPOLOGY_FLAG" in env else ["--topology", T]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "buildplane", *flags, *args], cwd=workspace, env=environ,
                          capture_output=True, text=True, timeout=TIME_LIMIT_S, preexec_fn=_limits)
    took = time.monotonic() - started
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert proc.stdout == ""
    after = snapshot(workspace)
    # The topology parse cache keeps a file that loaded in full (then the bad input was elsewhere: a flag,
    # the environment, a guard); a topology that did not load keeps nothing.
    kept = {k for k in after.keys() - before.keys() if k.startswith("home/.cache/buildplane/topology/")}
    assert not (kept and lines[0].startswith(f"{T}:")), f"a bad topology was kept in the parse cache: {kept}"
    assert {k: v for k, v in after.items() if k not in kept} == before, "a bad input left something behind"
    assert took < TIME_LIMIT_S / 2


def test_the_corpus_grows():
    """The corpus only grows: 72 cases before the hostile-input review (#15), at least 100 since."""
    assert len(ALL_CASES) >= 130 and len({c[0] for c in ALL_CASES}) == len(ALL_CASES)


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
