"""What the cluster commands (`status --pods`, `logs`, `restart`) share: the one allowed kube context, the
mode's namespace, the targets that have a release, and how a release's pods are found."""
from __future__ import annotations

from dataclasses import dataclass

from .. import contract, guards
from ..errors import BadInput, Missing
from ..kubecontext import resolve
from ..topology import Topology


@dataclass(frozen=True)
class Cluster:
    context: str
    namespace: str


def cluster(topo: Topology, mode: str, flag: str | None) -> Cluster:
    """The allowed context (refused, exit 3, when it is not in kube.contexts) and the mode's namespace."""
    ctx = resolve(flag)
    guards.check_kube_context(topo, ctx)
    if not ctx.name:
        raise Missing("no kube context: pass --kube-context (or set $BUILDPLANE_KUBE_CONTEXT) with one of "
                      f"{', '.join(topo.kube.contexts)}")
    return Cluster(ctx.name, topo.mode(mode).namespace)


def released_targets(topo: Topology, names: list[str]) -> list[str]:
    """The named targets (default: the non-optional ones) that have a chart, so a release and pods."""
    chosen = contract.select_targets(topo, tuple(names))
    if names:
        lacking = [n for n in chosen if not topo.targets[n].chart]
        if lacking:
            raise BadInput(f"{topo.source}: targets.{lacking[0]}.chart: not set, so it has no release and no pods; "
                           f"targets with one: {', '.join(n for n, t in topo.targets.items() if t.chart)}")
    return [n for n in chosen if topo.targets[n].chart]


def selector(topo: Topology, name: str) -> str:
    """The label Helm charts put on a release's objects (the charts here do; so do `helm create`'s)."""
    return f"app.kubernetes.io/instance={contract.release_name(topo, name)}"
