"""YAML loading that keeps line numbers, rejects duplicate keys and expands ${ENV}.

Every value the topology model sees comes with the line it was written on, so a
validation error can say `file:line: key.path: …` (DESIGN §4).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from . import parse_cache

if TYPE_CHECKING:  # ruamel is imported only when a file is really parsed (not on a parse-cache hit)
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Limits far above any real topology and far below what hurts: an alias bomb of 200 bytes expands to
# gigabytes, and deep nesting overflows Python's stack.
MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000  # values after every alias is expanded
# A plain (unquoted) scalar YAML would turn into a date or timestamp: nothing in a topology is one.
_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([Tt ]|$)")

Loc = tuple  # a key path: ("targets", "runtime", "dockerfile") or with list indexes


@dataclass
class Document:
    """A parsed YAML file: plain data plus the line of every key path."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    keep: Any = None  # after a real parse: what the parse cache keeps once the whole load has succeeded
    text: str = ""  # the file's bytes, as read

    def kept(self) -> None:
        """The load succeeded: keep this parse for the next run (never a file for a bad input)."""
        if self.keep is not None:
            parse_cache.put(*self.keep)

    def line_of(self, loc: Loc) -> int:
        """The line of the longest prefix of `loc` that was written in the file."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return 1

    def where(self, loc: Loc) -> str:
        return f"{self.path}:{self.line_of(loc)}"


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def load_document(path: Path, environ: dict[str, str] | None = None) -> Document:
    """Parse `path`; raise BadInput with file:line on any syntax, duplicate or ${ENV} problem."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"{path}: topology file not found (pass --topology PATH or set BUILDPLANE_TOPOLOGY)") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, expected a topology YAML file") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text ({exc.reason}); expected a topology YAML file") from None
    if not text.strip() or all(ln.strip().startswith("#") or not ln.strip() for ln in text.splitlines()):
        raise BadInput(f"{path}:1: the file is empty; expected a mapping starting with 'version: 1'")
    if len(text) > MAX_BYTES:
        raise BadInput(f"{path}:1: the file is {len(text)} bytes; a topology is at most {MAX_BYTES} bytes")
    doc = Document(path=path, data=None, text=text)
    cached = parse_cache.get(text)
    if cached is not None:  # these very bytes parsed (and passed the prescan) before: no YAML parser
        doc.data, doc.lines = cached
    else:
        doc.data = _structure(_parse(path, text), (), doc)
        doc.keep = (text, doc.data, doc.lines)
    doc.data = _expand_all(doc.data, (), doc, environ)
    return doc


def _parse(path: Path, text: str):
    """ruamel's round-trip tree of `text` (it keeps lines), after the prescan; BadInput with file:line."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        _prescan(path, yaml, text)
        raw = yaml.load(text)
    except DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        key = _dup_key(exc)
        raise BadInput(f"{path}:{line}: duplicate key {key!r}; each key may appear once per mapping") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = (exc.problem or exc.context or "syntax error").strip()
        raise BadInput(f"{path}:{line}: YAML syntax error: {problem}") from None
    except YAMLError as exc:
        raise BadInput(f"{path}:1: YAML error: {str(exc).splitlines()[0]}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # a constructor choking on a value the prescan let by
        raise BadInput(f"{path}:1: YAML value error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if raw is None:
        raise BadInput(f"{path}:1: the file is empty; expected a mapping starting with 'version: 1'")
    if not isinstance(raw, CommentedMap):
        raise BadInput(f"{path}:1: the top level is a {_kind(raw)}; expected a mapping with keys version, name, registries, kube, targets, modes")
    return raw


def _prescan(path: Path, yaml: YAML, text: str) -> None:
    """Walk the parser's events (nothing is built yet) and refuse what would explode or mislead later:
    more than MAX_NODES values once aliases are expanded (an alias bomb), nesting past MAX_DEPTH,
    explicit tags (`!!int abc`, `!!set`, `!!python/…`), and unquoted dates (`name: 2024-02-30` would
    be a date, or a crash, not a string)."""
    from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent

    sizes: dict[str, int] = {}  # anchor -> values it expands to
    open_: list[list] = [[0, None]]  # per open collection: [values so far, its anchor]
    for event in yaml.parse(text):
        line = event.start_mark.line + 1 if event.start_mark else 1
        _check_scalar(path, line, event)
        if isinstance(event, CollectionStartEvent):
            open_.append([1, event.anchor])
            if len(open_) > MAX_DEPTH:
                raise BadInput(f"{path}:{line}: nested more than {MAX_DEPTH} levels deep; a topology is a few levels")
            continue
        if isinstance(event, CollectionEndEvent):
            size, anchor = open_.pop()
        elif isinstance(event, AliasEvent):
            size, anchor = sizes.get(event.anchor, 1), None
        elif isinstance(event, ScalarEvent):
            size, anchor = 1, event.anchor
        else:
            continue
        if anchor:
            sizes[anchor] = size
        open_[-1][0] += size
        if open_[-1][0] > MAX_NODES:
            raise BadInput(f"{path}:{line}: the aliases (*name) here expand to more than {MAX_NODES} values; "
                           "write the values out")


def _check_scalar(path: Path, line: int, event) -> None:
    from ruamel.yaml.events import ScalarEvent

    tag = getattr(event, "tag", None)
    if tag and not (isinstance(event, ScalarEvent) and tag == "!"):
        shown = tag.replace("tag:yaml.org,2002:", "!!")
        raise BadInput(f"{path}:{line}: explicit YAML tag {shown!r} is not supported; write a plain value "
                       "(quote it to make it a string)")
    if isinstance(event, ScalarEvent) and event.style is None and _DATE.match(event.value):
        raise BadInput(f"{path}:{line}: {event.value!r} would be read as a date; quote it if it is a string "
                       f"(\"{event.value}\")")


def _dup_key(exc: DuplicateKeyError) -> str:
    m = re.search(r'found duplicate key "([^"]+)"', str(exc))
    return m.group(1) if m else "?"


def _kind(value: Any) -> str:
    if isinstance(value, list):  # ruamel's CommentedSeq is a list
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _structure(node: Any, loc: Loc, doc: Document) -> Any:
    """Convert ruamel's round-trip nodes to plain dict/list, recording lines (${ENV} is expanded later:
    this much is kept in the parse cache, which must not hold the environment's values)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        out = {}
        for key in node:
            kloc = loc + (str(key),)
            try:
                doc.lines[kloc] = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                doc.lines[kloc] = doc.line_of(loc)
            out[str(key)] = _structure(node[key], kloc, doc)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for i, item in enumerate(node):
            iloc = loc + (i,)
            try:
                doc.lines[iloc] = node.lc.item(i)[0] + 1
            except (KeyError, TypeError, AttributeError):
                doc.lines[iloc] = doc.line_of(loc)
            out_list.append(_structure(item, iloc, doc))
        return out_list
    if isinstance(node, str):
        return str(node)
    if hasattr(node, "__float__") and not isinstance(node, (bool, int)):
        return float(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    return node


def _expand_all(data: Any, loc: Loc, doc: Document, environ) -> Any:
    """Every string with its ${ENV} expanded; an unset VAR is an error naming its line."""
    if isinstance(data, dict):
        return {k: _expand_all(v, loc + (k,), doc, environ) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_all(v, loc + (i,), doc, environ) for i, v in enumerate(data)]
    if isinstance(data, str):
        expanded = _expand(data, loc, doc, environ)
        # A build arg keeps its ${VAR}: the value reaches buildx through its environment (`--build-arg NAME`),
        # so a token is never printed by `plan` nor visible in the docker argv.
        return data if len(loc) == 4 and loc[0] == "targets" and loc[2] == "build_args" else expanded
    return data


def expand_env(value: str, environ=None) -> str:
    """`${VAR}` replaced from the environment (checked at load, so every VAR is set)."""
    environ = os.environ if environ is None else environ
    return _ENV.sub(lambda m: environ.get(m.group(1), ""), value)


def has_env(value: str) -> bool:
    return bool(_ENV.search(value))


def _expand(value: str, loc: Loc, doc: Document, environ) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in environ:
            raise BadInput(
                f"{doc.where(loc)}: {format_loc(loc)}: ${{{name}}} is not set in the environment; "
                f"export {name}=… or write the value literally"
            )
        return environ[name]

    return _ENV.sub(sub, value)
