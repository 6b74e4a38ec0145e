"""Which kube context a run would use (DESIGN §7), read from flags, env and the kubeconfig — no kubectl."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path



@dataclass(frozen=True)
class KubeContext:
    name: str | None
    source: str  # flag | env | kubeconfig | none
    known: bool  # the kubeconfig defines it, so Helm can reach it


def kubeconfig_files(environ: dict[str, str]) -> list[Path]:
    if environ.get("KUBECONFIG"):
        return [Path(p) for p in environ["KUBECONFIG"].split(os.pathsep) if p]
    return [Path(environ.get("HOME", str(Path.home()))) / ".kube" / "config"]


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
        from ruamel.yaml import YAML  # here: a run with no kubeconfig to read never loads the YAML parser

        data = YAML(typ="safe").load(text)
    except Exception:  # noqa: BLE001 - an unreadable or malformed kubeconfig means "no context", not a crash
        return {}
    return data if isinstance(data, dict) else {}


def resolve(flag: str | None, environ: dict[str, str] | None = None) -> KubeContext:
    environ = os.environ if environ is None else environ
    current, names = None, set()
    for path in kubeconfig_files(environ):
        data = _read(path)
        current = current or data.get("current-context") or None
        for ctx in data.get("contexts") or []:
            if isinstance(ctx, dict) and ctx.get("name"):
                names.add(str(ctx["name"]))
    if flag:
        return KubeContext(flag, "flag", flag in names)
    if environ.get("BUILDPLANE_KUBE_CONTEXT"):
        name = environ["BUILDPLANE_KUBE_CONTEXT"]
        return KubeContext(name, "env", name in names)
    if current:
        return KubeContext(str(current), "kubeconfig", str(current) in names)
    return KubeContext(None, "none", False)
