"""`buildplane doctor`: each tool, credential and endpoint the topology needs, with a fix hint."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

import httpx

from ..errors import BuildplaneError, Missing
from ..kubecontext import resolve
from ..steps.browser import find_chromium
from ..tools import buildx
from ..tools.builders import BuilderChoice, choose as choose_builder, inspect_problem
from ..tools.registry import plain_http_host
from ..tools.run import INSTALL_HINTS, Runner
from ..topology import Topology


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _tool(runner: Runner, name: str, required: bool) -> Check:
    try:
        return Check(f"tool {name}", True, runner.which(name), required=required)
    except Missing:
        return Check(f"tool {name}", False, "not on PATH", INSTALL_HINTS.get(name, f"install {name}"), required)


def _registry(name: str, host: str, client: httpx.Client, plain: bool) -> Check:
    url = f"{'http' if plain else 'https'}://{host}/v2/"
    try:
        resp = client.get(url)
    except httpx.HTTPError as exc:
        return Check(f"registry {name}", False, f"{host} does not answer ({type(exc).__name__})",
                     "check the address in the topology, or run `make lab-up` for the local lab")
    if resp.status_code in (200, 401):
        return Check(f"registry {name}", True, f"{host} answers (HTTP {resp.status_code})")
    return Check(f"registry {name}", False, f"{host} answered HTTP {resp.status_code}", "check the registry address")


def _builder(runner: Runner, choice: BuilderChoice, probe) -> Check:
    """Does the run's builder answer, and can it export a registry build cache?"""
    name = f"builder ({choice.label}, from {choice.source})"
    argv = choice.inspect_argv()
    try:
        res = runner.run(argv, timeout=30)
        problem = inspect_problem(res.stdout + "\n" + res.stderr)
        if problem:
            return Check(name, False, f"does not answer ({problem[:160]})",
                         f"check it with `{shlex.join(argv)}` and `docker buildx ls`")
        info = probe()
    except BuildplaneError as exc:
        return Check(name, False, f"does not answer ({exc.message[:160]})",
                     f"check it with `{shlex.join(argv)}` and `docker buildx ls`")
    except Exception as exc:  # noqa: BLE001 - python-on-whales' own errors: the builder did not answer
        return Check(name, False, f"does not answer ({type(exc).__name__})", f"check it with `{shlex.join(argv)}`")
    cache = "exports registry cache" if info.registry_cache else \
        "no registry cache export (inline cache instead: enable the containerd image store or use another driver)"
    where = {"layout": "on this machine: images come back as an OCI layout buildplane pushes",
             "buildx": "images leave it with --push", "docker-push": "images leave it with one docker push"}
    return Check(name, True, f"{info.who}; {cache}; {where[info.push]}")


def run_checks(topo: Topology, runner: Runner | None = None, client: httpx.Client | None = None,
               probe=None) -> list[Check]:
    runner = runner or Runner()
    client = client or httpx.Client(timeout=3.0)
    checks = [_tool(runner, "docker", True), _tool(runner, "helm", False), _tool(runner, "tilt", False)]
    if checks[0].ok:
        choice = choose_builder(topo, None)
        checks.append(_builder(runner, choice, probe or (lambda: buildx.probe_builder(choice))))
    for name in ("final", "cache", "mirror"):
        ref = getattr(topo.registries, name)
        if ref:
            host = ref.split("/", 1)[0]
            checks.append(_registry(name, host, client, plain_http_host(host, topo.registries.plain_http)))
    ctx = resolve(None)
    allowed = ctx.name in topo.kube.contexts if ctx.name else False
    checks.append(Check("kube context", allowed, f"{ctx.name or 'none'} (from {ctx.source})",
                        f"pass --kube-context with one of {', '.join(topo.kube.contexts)}; "
                        "without one, releases are rendered, not applied", required=False))
    if topo.modes.deploy is not None:
        env = topo.modes.deploy.argo.token_env
        checks.append(Check(f"argo token ${env}", bool(os.environ.get(env)), "set" if os.environ.get(env) else "not set",
                            f"export {env}=<token> (argocd account generate-token)", required=False))
    if any(t.browser for t in topo.targets.values()):
        try:
            checks.append(Check("chromium (browser smoke)", True, find_chromium(), required=False))
        except Missing as exc:
            checks.append(Check("chromium (browser smoke)", False, "not found", exc.message, required=False))
    return checks


def run(args, topology) -> int:
    topo, _ = topology(args)
    worst = 0
    for check in run_checks(topo):
        mark = "ok " if check.ok else "!! "
        print(f"{mark}{check.name}: {check.detail}" + ("" if check.ok else f" — fix: {check.fix}"))
        if not check.ok and check.required:
            worst = 4
    return worst
