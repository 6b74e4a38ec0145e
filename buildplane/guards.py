"""What each mode may touch (DESIGN §7). Every refusal names its rule and happens before any tool runs."""
from __future__ import annotations

import re

from .errors import Refused
from .tools.kubectl import check_kubectl  # noqa: F401 - enforced by the runner; a guard like the rest
from .kubecontext import KubeContext
from .topology import Topology

# Tags a release process owns: versions (1, v1, 1.2, 1.2.3.4, 1.2.3-rc.1+build) and `latest`/`stable`.
IMMUTABLE_TAG = re.compile(r"^(latest|stable|v?\d+(\.\d+)*([-+][0-9A-Za-z.-]+)?)$")
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


# Kinds the API server keeps outside any namespace (core and common add-ons). A chart creating one of
# these reaches beyond the dev namespace, so it is refused unless the target lists the kind.
CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "StorageClass", "PriorityClass", "IngressClass", "RuntimeClass", "CSIDriver", "CSINode", "VolumeAttachment",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "APIService", "PodSecurityPolicy", "CertificateSigningRequest",
    "FlowSchema", "PriorityLevelConfiguration", "ClusterIssuer", "ClusterPolicy",
})
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_digest(target: str, digest: str) -> None:
    """A digest goes into Helm values: anything but `sha256:<64 hex>` is refused (no value can ride along)."""
    if not DIGEST.match(digest or ""):
        raise Refused("image-digest", f"{target}: {str(digest)[:80]!r} is not an image digest (sha256:<64 hex>); "
                                      "the registry's answer is not released")


def check_rendered(mode: str, target: str, namespace: str, objects: list[tuple[dict, str]],
                   cluster_scoped: tuple[str, ...] = ()) -> None:
    """Every object Helm would apply stays in `namespace`: refused (exit 3) before anything is applied.

    `objects`: (manifest, its `# Source:` template). An object without metadata.namespace lands in the
    release namespace; one naming another namespace, or a cluster-scoped kind not allowed, is refused.
    """
    for obj, source in objects:
        kind = str(obj.get("kind", "?"))
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        name = f"{kind}/{meta.get('name', '?')}"
        where = f" ({source})" if source else ""
        if kind in CLUSTER_SCOPED_KINDS and kind not in cluster_scoped:
            raise Refused("rendered-namespace", f"{target}: the chart renders {name}{where}, a cluster-scoped object; "
                                                f"{mode} releases only into {namespace!r} (list the kind in "
                                                f"targets.{target}.cluster_scoped to allow it)")
        ns = meta.get("namespace")
        if ns is not None and str(ns) != namespace:
            raise Refused("rendered-namespace", f"{target}: the chart renders {name}{where} into namespace "
                                                f"{ns!r}; {mode} releases only into {namespace!r}")
