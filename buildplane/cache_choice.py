"""Whether a run imports and exports the registry build cache, where the export runs, and who decided:
`--remote-cache`, else `$BUILDPLANE_REMOTE_CACHE`, else the topology's `modes.<mode>.cache`; the export in
the background in the dev loop, inside the build where the next machine needs it (CI, staging) or when
asked (`--wait-cache`, `$BUILDPLANE_WAIT_CACHE`). `plan` prints the sentence."""
from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import BadInput
from .topology import Topology

REMOTE_CACHE_ENV = "BUILDPLANE_REMOTE_CACHE"
WAIT_CACHE_ENV = "BUILDPLANE_WAIT_CACHE"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class CacheChoice:
    """Whether a run imports/exports the registry build cache, and who decided it (shown by `plan`)."""

    import_: bool
    export: bool
    source: str
    export_when: str = "inline"  # inline (in the build) | background (after the release)
    when_source: str = ""

    def sentence(self, mode: str) -> str:
        state = ("import + export" if self.import_ and self.export else "import only" if self.import_
                 else "export only" if self.export else "off")
        how = "" if self.import_ or self.export else (
            f"; turn it on with --remote-cache, {REMOTE_CACHE_ENV}=true or Tilt's --remote_cache")
        when = ""
        if self.export:
            when = (f"; export in the background after the release ({self.when_source}; --wait-cache waits)"
                    if self.export_when == "background" else f"; export inside the build ({self.when_source})")
        return f"registry build cache for {mode}: {state} (from {self.source}){how}{when}"


def env_switch(environ, name: str) -> bool | None:
    """A true/false switch from the environment; None when unset, exit 2 for anything else."""
    raw = environ.get(name)
    if raw is None:
        return None
    if raw.strip().lower() not in _TRUE + _FALSE:
        raise BadInput(f"${name}={raw!r}: valid: true or false")
    return raw.strip().lower() in _TRUE


def export_when(mode: str, wait_cache: bool, environ) -> tuple[str, str]:
    """Where the cache export runs, and why: in the background in the dev loop; inside the build where
    the next machine needs the cache (CI, staging) or when asked (--wait-cache, $BUILDPLANE_WAIT_CACHE)."""
    if wait_cache:
        return "inline", "--wait-cache"
    if env_switch(environ, WAIT_CACHE_ENV):
        return "inline", f"${WAIT_CACHE_ENV}"
    if environ.get("CI", "").strip().lower() in _TRUE:
        return "inline", "CI: the next machine needs the cache"
    if mode != "dev":
        return "inline", f"{mode} mode: the next machine needs the cache"
    return "background", "dev mode"


def cache_choice(topo: Topology, mode: str, remote_cache: bool, environ) -> CacheChoice:
    """--remote-cache, else $BUILDPLANE_REMOTE_CACHE, else the topology's modes.<mode>.cache."""
    setting = topo.mode(mode).cache
    if remote_cache:
        on, source = True, "--remote-cache"
    elif env_switch(environ, REMOTE_CACHE_ENV) is not None:
        on, source = bool(env_switch(environ, REMOTE_CACHE_ENV)), f"${REMOTE_CACHE_ENV}"
    else:
        return CacheChoice(setting.import_, setting.export, f"modes.{mode}.cache in {topo.source}")
    if on and not topo.registries.cache:
        raise BadInput(f"{topo.source}: registries.cache: not set, so {source} has no cache to use; "
                       "add registries.cache")
    return CacheChoice(on, on, source)


def cache_plan(topo: Topology, mode: str, remote_cache: bool, wait_cache: bool, environ) -> CacheChoice:
    """Whether the registry cache is used, and where its export runs."""
    when, why = export_when(mode, wait_cache, environ)
    return replace(cache_choice(topo, mode, remote_cache, environ), export_when=when, when_source=why)
