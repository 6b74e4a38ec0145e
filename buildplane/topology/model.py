"""Topology schema v1 (DESIGN §5) as frozen typed models: what a valid topology is."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import BadInput

DEFAULT_TOPOLOGY = Path("ops/infra/topology/local.yaml")
TAG_FIELDS = ("git_sha", "digest12", "mode", "target")
BUILD_MODES = ("dev", "staging")
MODES = ("dev", "staging", "deploy")


class _Model(BaseModel):
    # defer_build: a validator is built only when data is validated — never on a run whose topology
    # validated before (topology/construct.py)
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True, defer_build=True)


class RegistryAuth(_Model):
    """A registry's account from the environment (a CI or GitOps token): the token's variable, never the token."""

    username: str = Field(min_length=1)
    token_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class Registries(_Model):
    final: str
    mirror: str | None = None
    cache: str | None = None
    plain_http: tuple[str, ...] = ()
    auth: dict[str, RegistryAuth] = Field(default_factory=dict)  # host → its account

    @property
    def tokens(self) -> dict[str, tuple[str, str]]:
        """host → (username, the token's environment variable)."""
        return {host: (a.username, a.token_env) for host, a in (self.auth or {}).items()}


class Kube(_Model):
    contexts: tuple[str, ...] = Field(min_length=1)


ROUTE_MODES = ("dev", "staging")  # the modes that release, and so smoke


class SmokeRoute(_Model):
    url: str  # may hold {mode} and {namespace}: one route for every mode's own host
    status: int = 200
    text: str | None = None
    follow_redirects: bool = False
    modes: tuple[str, ...] | None = None  # the modes that check it; unset: every mode that releases

    def for_mode(self, mode: str, namespace: str) -> "SmokeRoute | None":
        """This route as `mode` checks it (placeholders filled), or None when `mode` does not check it."""
        if self.modes is not None and mode not in self.modes:
            return None
        return self.model_copy(update={"url": self.url.replace("{mode}", mode).replace("{namespace}", namespace)})


class BrowserCheck(_Model):
    url: str  # may hold {mode} and {namespace}, as a route's
    selector: str = "body"
    modes: tuple[str, ...] | None = None

    def for_mode(self, mode: str, namespace: str) -> "BrowserCheck | None":
        if self.modes is not None and mode not in self.modes:
            return None
        return self.model_copy(update={"url": self.url.replace("{mode}", mode).replace("{namespace}", namespace)})


class ModeValues(_Model):
    """Values files for one mode, used instead of `values` there (e.g. staging sizing)."""

    dev: tuple[str, ...] | None = None
    staging: tuple[str, ...] | None = None


class SyncRule(_Model):
    """Files that reach the image without a build: `src` (relative to the context) lands at `dest`."""

    src: str
    dest: str


class Target(_Model):
    context: str = "."
    dockerfile: str
    build_target: str | None = None
    build_args: dict[str, str] = {}
    image: str
    chart: str | None = None
    release: str | None = None
    values: tuple[str, ...] = ()
    # Nested defaults are made without a validator (model_construct), so none is built at import.
    mode_values: ModeValues = Field(default_factory=ModeValues.model_construct)
    smoke: tuple[SmokeRoute, ...] = ()
    browser: BrowserCheck | None = None
    optional: bool = False
    platform: str | None = None
    cluster_scoped: tuple[str, ...] = ()  # cluster-scoped kinds the chart may create (otherwise refused)
    sync: tuple[SyncRule, ...] = ()  # dev: edits inside these reach the image as one layer, through the registry

    def values_for(self, mode: str) -> tuple[str, ...]:
        """The values files a release in `mode` gets: `mode_values.<mode>` when set, else `values`."""
        own = getattr(self.mode_values, mode, None)
        return self.values if own is None else own

    def smoke_for(self, mode: str, namespace: str) -> tuple[SmokeRoute, ...]:
        """The routes a release in `mode` is smoke-tested on: a staging check never passes on dev's health."""
        return tuple(r for r in (route.for_mode(mode, namespace) for route in self.smoke) if r is not None)

    def browser_for(self, mode: str, namespace: str) -> BrowserCheck | None:
        return self.browser.for_mode(mode, namespace) if self.browser else None

    def all_values(self) -> tuple[str, ...]:
        """Every values file of every mode (release inputs for Tilt's deps and `explain`)."""
        files = [*self.values, *(self.mode_values.dev or ()), *(self.mode_values.staging or ())]
        return tuple(dict.fromkeys(files))


class CacheSetting(_Model):
    import_: bool = Field(default=False, alias="import")
    export: bool = False


class BuildMode(_Model):
    namespace: str
    tag: str = "{mode}-{git_sha}-{digest12}"
    cache: CacheSetting = Field(default_factory=CacheSetting.model_construct)
    release: bool = True
    helm_timeout: str = "5m"
    history_max: int = Field(default=10, ge=1)
    smoke_deadline_s: float = Field(default=120.0, gt=0, le=86400, allow_inf_nan=False)
    provenance: bool | None = None  # a provenance attestation in the image; unset: none in dev, buildx's default elsewhere


class Argo(_Model):
    server: str
    apps: tuple[str, ...] = Field(min_length=1)
    token_env: str = "ARGOCD_AUTH_TOKEN"
    username_env: str | None = None
    password_env: str | None = None
    timeout_s: float = Field(default=600.0, gt=0, le=86400, allow_inf_nan=False)
    prune: bool = False
    ca_file: str | None = None
    poll_s: float = Field(default=2.0, gt=0, le=3600, allow_inf_nan=False)  # how often the wait reads each app


class DeployMode(_Model):
    argo: Argo
    namespace: str | None = None


class Modes(_Model):
    dev: BuildMode
    staging: BuildMode | None = None
    deploy: DeployMode | None = None


class Builder(_Model):
    network: str | None = None  # e.g. "host" where the builder has no bridge network (the local lab)
    name: str | None = None  # a buildx builder instance or a Docker context (a shared build worker)
    max_parallel: int | None = Field(default=None, ge=1)  # builds at once on it (unset: no limit of ours)


class Telemetry(_Model):
    service_name: str = "buildplane"


class Topology(_Model):
    version: Literal[1]
    name: str
    registries: Registries
    kube: Kube
    protected_namespaces: tuple[str, ...] = ()
    targets: dict[str, Target] = Field(min_length=1)
    modes: Modes
    builder: Builder = Field(default_factory=Builder.model_construct)
    telemetry: Telemetry = Field(default_factory=Telemetry.model_construct)
    source: str = Field(default="", exclude=True)

    def mode(self, name: str) -> BuildMode:
        """The build mode `name` (dev or staging); BadInput when the topology has none."""
        if name not in BUILD_MODES:
            raise BadInput(f"--mode {name}: not a build mode; valid: {', '.join(BUILD_MODES)}")
        mode = getattr(self.modes, name)
        if mode is None:
            raise BadInput(f"{self.source}: modes.{name}: not defined in this topology; add modes.{name} with a namespace")
        return mode

    def default_targets(self) -> list[str]:
        return [name for name, t in self.targets.items() if not t.optional]
