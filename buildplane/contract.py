"""The BuildPlane contract: every name derived from a topology lives here, and only here."""
from __future__ import annotations

import re
import shlex
from difflib import get_close_matches
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput
from .topology import BUILD_MODES, Target, Topology

CONTENT_TAG_PREFIX = "bp-"


def image_repo(topo: Topology, target: str) -> str:
    """`{final}/{image}` — where a target's images are pushed."""
    return f"{topo.registries.final.rstrip('/')}/{topo.targets[target].image}"


def image_ref(topo: Topology, target: str, tag: str) -> str:
    """`{final}/{image}:{tag}`."""
    return f"{image_repo(topo, target)}:{tag}"


def cache_ref(topo: Topology, mode: str, target: str) -> str | None:
    """`{cache}/{mode}/{target}`: one build-cache ref per mode and target; None without a cache registry."""
    if not topo.registries.cache:
        return None
    return f"{topo.registries.cache.rstrip('/')}/{mode}/{target}"


def cache_scope(mode: str, target: str) -> str:
    """The cache scope name used in events and stats: `{mode}/{target}`."""
    return f"{mode}/{target}"


def content_tag(inputs_digest: str) -> str:
    """A tag derived from the image inputs digest alone, so freshness does not depend on the commit (DESIGN §6)."""
    return f"{CONTENT_TAG_PREFIX}{_hex(inputs_digest)[:16]}"


def render_tag(template: str, *, git_sha: str, inputs_digest: str, mode: str, target: str) -> str:
    """The mode's tag template with {git_sha}, {digest12}, {mode} and {target} filled in."""
    values = {"git_sha": git_sha, "digest12": _hex(inputs_digest)[:12], "mode": mode, "target": target}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def dev_tag_regex(topo: Topology) -> re.Pattern:
    """Tags only a workstation pushes: the dev mode's tag template, and content tags (`bp-…`)."""
    fill = {"git_sha": "[0-9a-f]{7,40}|nogit", "digest12": "[0-9a-f]{12}", "mode": "dev", "target": "[A-Za-z0-9_.-]+"}
    parts = re.split(r"(\{\w+\})", topo.modes.dev.tag)
    dev = "".join(f"(?:{fill[p[1:-1]]})" if p.startswith("{") and p[1:-1] in fill else re.escape(p) for p in parts)
    return re.compile(rf"^(?:{dev}|bp-[0-9a-f]{{16}})$")


def namespace(topo: Topology, mode: str) -> str | None:
    if mode in BUILD_MODES:
        m = getattr(topo.modes, mode)
        return m.namespace if m else None
    if topo.modes.deploy is not None:
        return topo.modes.deploy.namespace
    return None


def release_name(topo: Topology, target: str) -> str:
    t = topo.targets[target]
    return t.release or t.image.rsplit("/", 1)[-1]


def base_image_arg(topo: Topology) -> dict[str, str]:
    """Build arg pointing Dockerfiles at the mirror, so base images come through it."""
    return {"BASE_REGISTRY": topo.registries.mirror} if topo.registries.mirror else {}


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def env_name(target: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", target.upper())


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str
    doc: str


def environment(topo: Topology, mode: str, topology_file: Path | str) -> list[EnvVar]:
    """The contract as environment variables (README: "Environment names")."""
    if mode not in ("dev", "staging", "deploy"):
        raise BadInput(f"--mode {mode}: valid: dev, staging, deploy")
    out = [
        EnvVar("BUILDPLANE_TOPOLOGY", str(topology_file), "the topology file these names come from"),
        EnvVar("BUILDPLANE_NAME", topo.name, "the topology's name"),
        EnvVar("BUILDPLANE_MODE", mode, "the mode these names are for"),
        EnvVar("BUILDPLANE_REGISTRY_FINAL", topo.registries.final, "registry that holds images"),
        EnvVar("BUILDPLANE_REGISTRY_MIRROR", topo.registries.mirror or "", "pull-through mirror for base images"),
        EnvVar("BUILDPLANE_REGISTRY_CACHE", topo.registries.cache or "", "registry that holds build cache"),
        EnvVar("BUILDPLANE_NAMESPACE", namespace(topo, mode) or "", "namespace the mode releases into"),
        EnvVar("BUILDPLANE_KUBE_CONTEXTS", ",".join(topo.kube.contexts), "allowed kube contexts"),
        EnvVar("BUILDPLANE_PROTECTED_NAMESPACES", ",".join(topo.protected_namespaces), "Argo-owned namespaces"),
        EnvVar("BUILDPLANE_TARGETS", ",".join(topo.targets), "all targets"),
        EnvVar("BUILDPLANE_DEFAULT_TARGETS", ",".join(topo.default_targets()), "targets `up` runs by default"),
    ]
    if topo.modes.deploy is not None:
        argo = topo.modes.deploy.argo
        out += [
            EnvVar("BUILDPLANE_ARGO_SERVER", argo.server, "Argo CD API server"),
            EnvVar("BUILDPLANE_ARGO_APPS", ",".join(argo.apps), "canonical Argo CD apps"),
            EnvVar("BUILDPLANE_ARGO_TOKEN_ENV", argo.token_env, "name of the variable holding the Argo CD token"),
        ]
    cache_mode = mode if mode in BUILD_MODES else "dev"
    for name in topo.targets:
        suffix = env_name(name)
        out.append(EnvVar(f"BUILDPLANE_IMAGE_{suffix}", image_repo(topo, name), f"image repository of {name}"))
        out.append(EnvVar(f"BUILDPLANE_CACHE_REF_{suffix}", cache_ref(topo, cache_mode, name) or "", f"build-cache ref of {name}"))
        out.append(EnvVar(f"BUILDPLANE_RELEASE_{suffix}", release_name(topo, name), f"Helm release of {name}"))
    return out


def format_sh(env: list[EnvVar]) -> str:
    return "".join(f"export {v.name}={shlex.quote(v.value)}\n" for v in env)


def project_path(base: Path, p: str) -> Path:
    """A topology path as the run uses it: kept as written when relative to the CWD (plan output stays
    readable), else resolved against `base`."""
    path = Path(p)
    if path.is_absolute() or base == Path.cwd():
        return path
    return base / path


def select_targets(topo: Topology, names: tuple[str, ...]) -> list[str]:
    """The named targets (each checked, duplicates dropped), else the non-optional ones."""
    for name in names:
        target(topo, name)
    return list(dict.fromkeys(names)) if names else topo.default_targets()


def target(topo: Topology, name: str) -> Target:
    if name not in topo.targets:
        hint = get_close_matches(name, list(topo.targets), n=1)
        mean = f"did you mean {hint[0]!r}? " if hint else ""
        raise BadInput(f"{topo.source}: targets: no target {name!r}; {mean}valid: {', '.join(topo.targets)}")
    return topo.targets[name]
