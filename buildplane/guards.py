"""What each mode may touch (DESIGN §7). Every refusal names its rule and happens before any tool runs."""
from __future__ import annotations

import re

from .errors import Refused
from .tools.kubectl import check_kubectl  # noqa: F401 - enforced by the runner; a guard like the rest
from .kubecontext import KubeContext
from .topology import Topology

IMMUTABLE_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)?([-+][0-9A-Za-z.-]+)?$")
def check_kube_context(topo: Topology, ctx: KubeContext) -> None:
    if ctx.name is not None and ctx.name not in topo.kube.contexts:
        raise Refused(
            "kube-context-allow-list",
            f"kube context {ctx.name!r} (from {ctx.source}) is not in kube.contexts "
            f"[{', '.join(topo.kube.contexts)}]; pass --kube-context with one of those",
        )


def check_release_namespace(topo: Topology, mode: str, namespace: str) -> None:
    if namespace in topo.protected_namespaces:
        raise Refused(
            "protected-namespace",
            f"{mode} may not release into {namespace!r}: it is in protected_namespaces (Argo CD owns it); "
            f"use deploy-mode to hand changes to Argo CD",
        )
    expected = topo.mode(mode).namespace
    if namespace != expected:
        raise Refused("mode-namespace", f"{mode} releases only into its own namespace {expected!r}, not {namespace!r}")


def check_tag(mode: str, target: str, tag: str) -> None:
    if IMMUTABLE_TAG.match(tag):
        raise Refused(
            "immutable-tag",
            f"{mode} would push {target}:{tag}, an immutable-looking release tag it does not own; "
            f"use a tag template with {{mode}} or {{git_sha}}",
        )
