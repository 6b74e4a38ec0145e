"""`buildplane doctor`: each tool, credential and endpoint the topology needs, with a fix hint."""
from __future__ import annotations

import os
from dataclasses import dataclass

import httpx

from ..errors import Missing
from ..kubecontext import resolve
from ..steps.browser import find_chromium
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


def run_checks(topo: Topology, runner: Runner | None = None, client: httpx.Client | None = None) -> list[Check]:
    runner = runner or Runner()
    client = client or httpx.Client(timeout=3.0)
    checks = [_tool(runner, "docker", True), _tool(runner, "helm", False), _tool(runner, "tilt", False)]
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
