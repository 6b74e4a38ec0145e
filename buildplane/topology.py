"""Topology schema v1 (DESIGN §5): YAML → frozen typed models, validated once.

Every problem becomes one BadInput line: `file:line: key.path: what is wrong; what is valid`.
"""
from __future__ import annotations

import json
import os
import re
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import BadInput
from .yamlsource import Document, format_loc, load_document

DEFAULT_TOPOLOGY = Path("ops/infra/topology/local.yaml")
TAG_FIELDS = ("git_sha", "digest12", "mode", "target")
BUILD_MODES = ("dev", "staging")
MODES = ("dev", "staging", "deploy")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_IMAGE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)


class Registries(_Model):
    final: str
    mirror: str | None = None
    cache: str | None = None
    plain_http: tuple[str, ...] = ()


class Kube(_Model):
    contexts: tuple[str, ...] = Field(min_length=1)


class SmokeRoute(_Model):
    url: str
    status: int = 200
    text: str | None = None
    follow_redirects: bool = False


class BrowserCheck(_Model):
    url: str
    selector: str = "body"


class ModeValues(_Model):
    """Values files for one mode, used instead of `values` there (e.g. staging sizing)."""

    dev: tuple[str, ...] | None = None
    staging: tuple[str, ...] | None = None


class Target(_Model):
    context: str = "."
    dockerfile: str
    build_target: str | None = None
    build_args: dict[str, str] = {}
    image: str
    chart: str | None = None
    release: str | None = None
    values: tuple[str, ...] = ()
    mode_values: ModeValues = ModeValues()
    smoke: tuple[SmokeRoute, ...] = ()
    browser: BrowserCheck | None = None
    optional: bool = False
    platform: str | None = None

    def values_for(self, mode: str) -> tuple[str, ...]:
        """The values files a release in `mode` gets: `mode_values.<mode>` when set, else `values`."""
        own = getattr(self.mode_values, mode, None)
        return self.values if own is None else own

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
    cache: CacheSetting = CacheSetting()
    release: bool = True
    helm_timeout: str = "5m"
    history_max: int = Field(default=10, ge=1)
    smoke_deadline_s: float = Field(default=120.0, gt=0)


class Argo(_Model):
    server: str
    apps: tuple[str, ...] = Field(min_length=1)
    token_env: str = "ARGOCD_AUTH_TOKEN"
    username_env: str | None = None
    password_env: str | None = None
    timeout_s: float = Field(default=600.0, gt=0)
    prune: bool = False
    ca_file: str | None = None
    poll_s: float = Field(default=2.0, gt=0)  # how often the wait reads each app


class DeployMode(_Model):
    argo: Argo
    namespace: str | None = None


class Modes(_Model):
    dev: BuildMode
    staging: BuildMode | None = None
    deploy: DeployMode | None = None


class Builder(_Model):
    network: str | None = None  # e.g. "host" where the builder has no bridge network (the local lab)


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
    builder: Builder = Builder()
    telemetry: Telemetry = Telemetry()
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


_MODEL_NAMES = {cls.__name__ for cls in _Model.__subclasses__()}


def topology_path(explicit: str | None, environ: dict[str, str] | None = None) -> Path:
    """--topology, else BUILDPLANE_TOPOLOGY, else the embedded default (DESIGN §4)."""
    environ = os.environ if environ is None else environ
    return Path(explicit or environ.get("BUILDPLANE_TOPOLOGY") or DEFAULT_TOPOLOGY)


def load(path: Path | str, environ: dict[str, str] | None = None, base: Path | None = None) -> Topology:
    """Load and validate a topology file; BadInput (exit 2) with file:line on any problem."""
    path = Path(path)
    doc = load_document(path, environ)
    try:
        # JSON mode: strict types, but YAML lists are accepted for tuple fields.
        topo = Topology.model_validate_json(json.dumps({**doc.data, "source": str(path)}, default=str))
    except ValidationError as exc:
        raise BadInput(_first_error(doc, exc)) from None
    _check_semantics(doc, topo, base or Path.cwd())
    return topo


# ---- error translation ------------------------------------------------------------------------

def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class that validates the mapping at `loc` (for 'did you mean')."""
    model: Any = Topology
    i = 0
    while i < len(loc):
        part = loc[i]
        if model is Topology and part == "targets":
            model, i = Target, i + 2
            continue
        fields = model.model_fields
        name = next((n for n, f in fields.items() if n == part or f.alias == part), None)
        if name is None:
            return None
        ann = fields[name].annotation
        nxt = _unwrap(ann)
        if nxt is None:
            return None
        model = nxt
        i += 1
        if i < len(loc) and isinstance(loc[i], int):
            i += 1
    return model


def _unwrap(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items() if n != "source"]


_TYPE_WORDS = {
    "string_type": "a string", "int_type": "a whole number", "int_from_float": "a whole number",
    "bool_type": "true or false", "float_type": "a number", "dict_type": "a mapping",
    "model_type": "a mapping", "tuple_type": "a list", "list_type": "a list", "model_attributes_type": "a mapping",
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "null"
    return type(value).__name__


def _first_error(doc: Document, exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    # pydantic reports union members as extra loc parts (e.g. 'BuildMode'); drop them.
    loc = tuple(p for p in loc if p not in _MODEL_NAMES)
    kind = err["type"]
    where = doc.where(loc)
    key = format_loc(loc)
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        valid = _keys_of(model) if model else []
        hint = get_close_matches(str(loc[-1]), valid, n=1)
        mean = f"did you mean {hint[0]!r}? " if hint else ""
        return f"{where}: {key}: unknown key; {mean}valid keys here: {', '.join(valid)}"
    if kind == "missing":
        return f"{where}: {key}: required key is missing"
    if kind == "literal_error":
        return f"{where}: {key}: got {_describe(err.get('input'))}; valid: {err['ctx']['expected']}"
    if kind in ("too_short",):
        return f"{where}: {key}: must not be empty"
    if kind in ("greater_than", "greater_than_equal"):
        bound = err["ctx"].get("gt", err["ctx"].get("ge"))
        op = ">" if "gt" in err["ctx"] else "≥"
        return f"{where}: {key}: got {_describe(err.get('input'))}; valid: a number {op} {bound}"
    if kind in _TYPE_WORDS:
        return f"{where}: {key}: got {_describe(err.get('input'))}; expected {_TYPE_WORDS[kind]}"
    return f"{where}: {key}: {err['msg']}"


# ---- checks a schema cannot express -----------------------------------------------------------

def _fail(doc: Document, loc: tuple, message: str) -> BadInput:
    return BadInput(f"{doc.where(loc)}: {format_loc(loc)}: {message}")


def _resolve(base: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else base / path


def _check_values(doc: Document, tloc: tuple, target: Target, base: Path) -> None:
    lists = [(("values",), target.values)] + [(("mode_values", m), getattr(target.mode_values, m) or ())
                                             for m in BUILD_MODES]
    for key, files in lists:
        for i, values in enumerate(files):
            if not _resolve(base, values).is_file():
                raise _fail(doc, tloc + key + (i,), f"values file {values} does not exist")
        if files and target.chart is None:
            raise _fail(doc, tloc + key, f"values need a chart; add targets.{tloc[1]}.chart")


def _check_semantics(doc: Document, topo: Topology, base: Path) -> None:
    for name, target in topo.targets.items():
        tloc = ("targets", name)
        if not _NAME.match(name):
            raise _fail(doc, tloc, "target names are lowercase letters, digits, '-' and '_'")
        if not _IMAGE.match(target.image):
            raise _fail(doc, tloc + ("image",), f"{target.image!r} is not a valid image name (lowercase, digits, '.', '_', '-', '/')")
        ctx = _resolve(base, target.context)
        if not ctx.is_dir():
            raise _fail(doc, tloc + ("context",), f"directory {ctx} does not exist; give the build context directory")
        dockerfile = _resolve(base, target.dockerfile)
        if not dockerfile.is_file():
            raise _fail(doc, tloc + ("dockerfile",), f"file {dockerfile} does not exist; give the path of the target's Dockerfile")
        if target.chart is not None:
            chart = _resolve(base, target.chart)
            if not (chart / "Chart.yaml").is_file():
                raise _fail(doc, tloc + ("chart",), f"{chart} is not a chart directory (no Chart.yaml); give the chart's directory")
        _check_values(doc, tloc, target, base)
        for i, route in enumerate(target.smoke):
            if not route.url.startswith(("http://", "https://")):
                raise _fail(doc, tloc + ("smoke", i, "url"), f"{route.url!r} is not an http(s) URL")
            if not 100 <= route.status <= 599:
                raise _fail(doc, tloc + ("smoke", i, "status"), f"{route.status} is not an HTTP status; valid: 100-599")
        if target.browser and not target.browser.url.startswith(("http://", "https://")):
            raise _fail(doc, tloc + ("browser", "url"), f"{target.browser.url!r} is not an http(s) URL")
        if target.release is not None and not _K8S_NAME.match(target.release):
            raise _fail(doc, tloc + ("release",), f"{target.release!r} is not a valid Helm release name (lowercase, digits, '-')")
    for mname in BUILD_MODES:
        mode = getattr(topo.modes, mname)
        if mode is None:
            continue
        mloc = ("modes", mname)
        if not _K8S_NAME.match(mode.namespace):
            raise _fail(doc, mloc + ("namespace",), f"{mode.namespace!r} is not a valid Kubernetes namespace name")
        for field in re.findall(r"\{([^}]*)\}", mode.tag):
            if field not in TAG_FIELDS:
                raise _fail(doc, mloc + ("tag",), f"unknown placeholder {{{field}}}; valid: " + ", ".join("{%s}" % f for f in TAG_FIELDS))
        if not re.fullmatch(r"[A-Za-z0-9_.{}-]+", mode.tag) or mode.tag.startswith((".", "-")):
            raise _fail(doc, mloc + ("tag",), f"{mode.tag!r} would not be a valid image tag (letters, digits, '_', '.', '-')")
        if (mode.cache.import_ or mode.cache.export) and not topo.registries.cache:
            raise _fail(doc, mloc + ("cache",), "cache import/export needs registries.cache")
        if not re.fullmatch(r"\d+[smh]|\d+m\d+s", mode.helm_timeout):
            raise _fail(doc, mloc + ("helm_timeout",), f"{mode.helm_timeout!r} is not a duration; valid: e.g. 300s, 5m, 1h")
    if topo.modes.deploy is not None:
        server = topo.modes.deploy.argo.server
        if not server.startswith(("http://", "https://")):
            raise _fail(doc, ("modes", "deploy", "argo", "server"), f"{server!r} is not an http(s) URL")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", topo.modes.deploy.argo.token_env):
            raise _fail(doc, ("modes", "deploy", "argo", "token_env"), "must be an environment variable name, not the token itself")
        ca = topo.modes.deploy.argo.ca_file
        if ca is not None and not _resolve(base, ca).is_file():
            raise _fail(doc, ("modes", "deploy", "argo", "ca_file"), f"file {ca} does not exist; give a PEM CA bundle")
