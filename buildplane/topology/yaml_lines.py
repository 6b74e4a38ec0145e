"""YAML loading that keeps line numbers, rejects duplicate keys and expands ${ENV}.

Every value the topology model sees comes with the line it was written on, so a
validation error can say `file:line: key.path: …` (DESIGN §4).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ..errors import BadInput

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

Loc = tuple  # a key path: ("targets", "runtime", "dockerfile") or with list indexes


@dataclass
class Document:
    """A parsed YAML file: plain data plus the line of every key path."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

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
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
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
    if raw is None:
        raise BadInput(f"{path}:1: the file is empty; expected a mapping starting with 'version: 1'")
    if not isinstance(raw, CommentedMap):
        raise BadInput(f"{path}:1: the top level is a {_kind(raw)}; expected a mapping with keys version, name, registries, kube, targets, modes")
    doc = Document(path=path, data=None)
    doc.data = _plain(raw, (), doc, environ)
    return doc


def _dup_key(exc: DuplicateKeyError) -> str:
    m = re.search(r'found duplicate key "([^"]+)"', str(exc))
    return m.group(1) if m else "?"


def _kind(value: Any) -> str:
    if isinstance(value, (list, CommentedSeq)):
        return "list"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _plain(node: Any, loc: Loc, doc: Document, environ) -> Any:
    """Convert ruamel's round-trip nodes to plain dict/list, recording lines and expanding ${ENV}."""
    if isinstance(node, CommentedMap):
        out = {}
        for key in node:
            kloc = loc + (str(key),)
            try:
                doc.lines[kloc] = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                doc.lines[kloc] = doc.line_of(loc)
            out[str(key)] = _plain(node[key], kloc, doc, environ)
        return out
    if isinstance(node, CommentedSeq):
        out_list = []
        for i, item in enumerate(node):
            iloc = loc + (i,)
            try:
                doc.lines[iloc] = node.lc.item(i)[0] + 1
            except (KeyError, TypeError, AttributeError):
                doc.lines[iloc] = doc.line_of(loc)
            out_list.append(_plain(item, iloc, doc, environ))
        return out_list
    if isinstance(node, str):
        return _expand(str(node), loc, doc, environ)
    if hasattr(node, "__float__") and not isinstance(node, (bool, int)):
        return float(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    return node


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
