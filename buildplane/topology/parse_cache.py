"""The parse of a topology file, kept by its content: the next run with the same bytes skips YAML.

ruamel's round-trip parser (needed for line numbers) and the prescan cost ~65 ms on every run, the
largest share of a no-op `up`. What is kept is the plain structure and the line of every key path,
before ${ENV} expansion (no value of the environment is ever written), under
`$XDG_CACHE_HOME/buildplane/topology/<sha256 of the bytes>.json`. Only bytes that parsed and passed
the prescan are kept, and the model still validates what comes back, so a hit is as safe as a parse.
A cache that cannot be read or written only costs the parse.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT = "1"  # bump when the kept structure changes


def _dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path(os.environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "buildplane" / "topology"


def _file(text: str) -> Path:
    return _dir() / (hashlib.sha256(f"{FORMAT}\0{text}".encode()).hexdigest() + ".json")


def get(text: str) -> tuple[object, dict] | None:
    """(data, lines) for these bytes, or None."""
    try:
        kept = json.loads(_file(text).read_text())
        lines = {tuple(loc): int(line) for loc, line in kept["lines"]}
        return kept["data"], lines
    except (OSError, ValueError, KeyError, TypeError):
        return None


def put(text: str, data: object, lines: dict) -> None:
    path = _file(text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"data": data, "lines": [[list(k), v] for k, v in lines.items()]}))
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        pass


def _valid_file(text: str) -> Path:
    return _file(text).with_suffix(".valid")


def was_valid(text: str, model_print: str) -> bool:
    """These bytes validated in full against this very model before (see topology/construct.py)."""
    try:
        return _valid_file(text).read_text() == model_print
    except OSError:
        return False


def mark_valid(text: str, model_print: str) -> None:
    from ..state import keep_file

    keep_file(_valid_file(text), model_print.encode())
