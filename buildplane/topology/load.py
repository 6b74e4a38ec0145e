"""Topology schema v1 (DESIGN §5): YAML → frozen typed models, validated once.

Every problem becomes one BadInput line: `file:line: key.path: what is wrong; what is valid`.
"""
from __future__ import annotations

import json
import os
import re
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import BadInput
from . import parse_cache
from .construct import construct
from .model import BUILD_MODES, DEFAULT_TOPOLOGY, ROUTE_MODES, TAG_FIELDS, Target, Topology, _Model
from .yaml_lines import Document, format_loc, load_document

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_IMAGE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A registry reference: host[:port] then a lowercase repository path; no scheme (buildx and Helm want none).
_REGISTRY_REF = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?$")

_MODEL_NAMES = {cls.__name__ for cls in _Model.__subclasses__()}


def topology_path(explicit: str | None, environ: dict[str, str] | None = None) -> Path:
    """--topology, else BUILDPLANE_TOPOLOGY, else the embedded default (DESIGN §4)."""
    environ = os.environ if environ is None else environ
    return Path(explicit or environ.get("BUILDPLANE_TOPOLOGY") or DEFAULT_TOPOLOGY)


def load(path: Path | str, environ: dict[str, str] | None = None, base: Path | None = None) -> Topology:
    """Load and validate a topology file; BadInput (exit 2) with file:line on any problem."""
    path = Path(path)
    doc = load_document(path, environ)
    version = doc.data.get("version") if isinstance(doc.data, dict) else None
    if "version" in doc.data and (type(version) is not int or version != 1):  # true and 1.0 equal 1 in Python
        raise BadInput(f"{doc.where(('version',))}: version: got {version!r}; valid: 1 (a whole number)")
    payload = json.dumps({**doc.data, "source": str(path)}, default=str)
    printed = model_print()
    valid_before = parse_cache.was_valid(doc.text, printed)
    if valid_before:  # these bytes validated against this model before: build it, no validator (construct.py)
        topo = construct(Topology, json.loads(payload))
    else:
        try:
            # JSON mode: strict types, but YAML lists are accepted for tuple fields.
            topo = Topology.model_validate_json(payload)
        except ValidationError as exc:
            raise BadInput(_first_error(doc, exc)) from None
    _check_semantics(doc, topo, base or Path.cwd())
    doc.kept()
    if not valid_before:
        parse_cache.mark_valid(doc.text, printed)
    return topo


def model_print() -> str:
    """What a validation was against: this model's source and pydantic's version."""
    import hashlib

    from pydantic.version import VERSION
    from . import model

    return hashlib.sha256(Path(model.__file__).read_bytes() + VERSION.encode()).hexdigest()


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
    errors = exc.errors(include_url=False)
    # A misspelt key is also a missing one: its "did you mean" says more than "required key is missing".
    err = errors[0]
    if err["type"] == "missing":
        err = next((e for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == err["loc"][:-1]), err)
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
    _check_registries(doc, topo)
    _check_builder(doc, topo)
    for name, target in topo.targets.items():
        _check_target(doc, name, target, base)
        if target.sync:
            _check_sync(doc, topo, name, base)
    _check_unique(doc, topo)
    for mname in BUILD_MODES:
        if getattr(topo.modes, mname) is not None:
            _check_build_mode(doc, topo, mname)
    if topo.modes.deploy is not None:
        _check_deploy(doc, topo, base)


def _check_target(doc: Document, name: str, target: Target, base: Path) -> None:
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
    if target.chart is not None and not (_resolve(base, target.chart) / "Chart.yaml").is_file():
        raise _fail(doc, tloc + ("chart",), f"{_resolve(base, target.chart)} is not a chart directory (no Chart.yaml); "
                    "give the chart's directory")
    _check_values(doc, tloc, target, base)
    _check_urls(doc, tloc, target)
    if target.release is not None and not _K8S_NAME.match(target.release):
        raise _fail(doc, tloc + ("release",), f"{target.release!r} is not a valid Helm release name (lowercase, digits, '-')")


def _check_sync(doc: Document, topo: Topology, name: str, base: Path) -> None:
    """Each sync rule stays inside the context and matches a COPY of the final stage (sync_rules.py)."""
    from .sync_rules import RuleError, for_target
    try:
        for_target(topo, name, base)
    except RuleError as exc:
        raise _fail(doc, ("targets", name, "sync", exc.index, exc.key), exc.message) from None


def _check_builder(doc: Document, topo: Topology) -> None:
    from ..tools.builders import NAME
    if topo.builder.name is not None and not NAME.match(topo.builder.name):
        raise _fail(doc, ("builder", "name"), f"{topo.builder.name!r} is not a builder or Docker context name; valid: "
                                              "letters, digits, '_', '.', '-' (see `docker buildx ls`)")


def _check_registries(doc: Document, topo: Topology) -> None:
    for key in ("final", "mirror", "cache"):
        ref = getattr(topo.registries, key)
        if ref is not None and not _REGISTRY_REF.match(ref):
            raise _fail(doc, ("registries", key), f"{ref!r} is not a registry reference; valid: host[:port]/path with a "
                                                  "lowercase path and no scheme, e.g. ghcr.io/team")
    for i, host in enumerate(topo.registries.plain_http):
        if not _HOST_PORT.match(host):
            raise _fail(doc, ("registries", "plain_http", i), f"{host!r} is not a host[:port]; plain_http lists "
                                                             "registry hosts exactly as in the references")
    for host in topo.registries.auth or {}:
        if not _HOST_PORT.match(host):
            raise _fail(doc, ("registries", "auth", host), f"{host!r} is not a host[:port]; auth is keyed by registry "
                                                           "hosts exactly as in the references, e.g. ghcr.io")


def _check_unique(doc: Document, topo: Topology) -> None:
    """Names derived from targets must not collide: two targets on one release would run under different
    locks and overwrite each other; two on one env name would export one variable twice."""
    from ..contract import env_name, release_name
    seen_release: dict[str, str] = {}
    seen_env: dict[str, str] = {}
    for name, target in topo.targets.items():
        tloc = ("targets", name)
        env = env_name(name)
        if env in seen_env:
            raise _fail(doc, tloc, f"targets {seen_env[env]!r} and {name!r} both become BUILDPLANE_IMAGE_{env}; "
                                   "rename one")
        seen_env[env] = name
        if target.chart is None:
            continue
        release = release_name(topo, name)
        where = tloc + (("release",) if target.release else ("image",))
        if len(release) > 53 or not _K8S_NAME.match(release):
            raise _fail(doc, where, f"the Helm release would be {release!r}, not a valid release name "
                                    f"(lowercase letters, digits, '-', at most 53); set targets.{name}.release")
        if release in seen_release:
            raise _fail(doc, where, f"targets {seen_release[release]!r} and {name!r} would both release {release!r}; "
                                    f"set targets.{name}.release to a name of its own")
        seen_release[release] = name


def _check_urls(doc: Document, tloc: tuple, target: Target) -> None:
    checks = [(("smoke", i), route) for i, route in enumerate(target.smoke)]
    checks += [(("browser",), target.browser)] if target.browser else []
    for where, check in checks:
        if not check.url.startswith(("http://", "https://")):
            raise _fail(doc, tloc + where + ("url",), f"{check.url!r} is not an http(s) URL")
        unknown = [f for f in re.findall(r"\{([^}]*)\}", check.url) if f not in ("mode", "namespace")]
        if unknown:
            raise _fail(doc, tloc + where + ("url",), f"{{{unknown[0]}}} is not a placeholder; valid: {{mode}}, {{namespace}}")
        for j, mode in enumerate(check.modes or ()):
            if mode not in ROUTE_MODES:
                raise _fail(doc, tloc + where + ("modes", j), f"{mode!r} is not a mode that releases; valid: "
                                                               f"{', '.join(ROUTE_MODES)}")
    for i, route in enumerate(target.smoke):
        if not 100 <= route.status <= 599:
            raise _fail(doc, tloc + ("smoke", i, "status"), f"{route.status} is not an HTTP status; valid: 100-599")


def _check_build_mode(doc: Document, topo: Topology, mname: str) -> None:
    mode, mloc = getattr(topo.modes, mname), ("modes", mname)
    if len(mode.namespace) > 63 or not _K8S_NAME.match(mode.namespace):
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


def _check_deploy(doc: Document, topo: Topology, base: Path) -> None:
    argo, aloc = topo.modes.deploy.argo, ("modes", "deploy", "argo")
    if not argo.server.startswith(("http://", "https://")):
        raise _fail(doc, aloc + ("server",), f"{argo.server!r} is not an http(s) URL")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", argo.token_env):
        raise _fail(doc, aloc + ("token_env",), "must be an environment variable name, not the token itself")
    if argo.ca_file is not None and not _resolve(base, argo.ca_file).is_file():
        raise _fail(doc, aloc + ("ca_file",), f"file {argo.ca_file} does not exist; give a PEM CA bundle")
