"""The parse of a topology file, kept by its content: the next run with the same bytes skips YAML.

ruamel's round-trip parser (needed for line numbers) and the prescan cost ~65 ms on every run, the
largest share of a no-op `up`. What is kept is the plain structure and the line of every key path,
before ${ENV} expansion (no value of the environment is ever written), under
`$XDG_CACHE_HOME/buildplane/topology/<sha256 of the bytes>.json`. Only bytes that parsed and passed
the prescan are kept. Each entry is sealed: an HMAC (a per-user key, 0600, beside the entries) over the
file's bytes and the kept structure; an entry whose seal does not match (edited by hand, or for other
bytes) is parsed again, and the "validated before" mark is bound the same way to the bytes and the
model, so an edited entry can neither change the topology nor skip its validation. A cache that cannot
be read or written only costs the parse.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

FORMAT = "2"  # bump when the kept structure changes


def _dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path(os.environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "buildplane" / "topology"


def _file(text: str) -> Path:
    return _dir() / (hashlib.sha256(f"{FORMAT}\0{text}".encode()).hexdigest() + ".json")


_KEYS: dict[Path, bytes] = {}  # read once a run (get and put both seal)


def _key() -> bytes:
    """This user's sealing key, made once (0600)."""
    path = _dir() / ".key"
    if path in _KEYS:
        return _KEYS[path]
    try:
        _KEYS[path] = path.read_bytes()
        return _KEYS[path]
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
    except FileExistsError:  # another run made it meanwhile
        key = path.read_bytes()
    _KEYS[path] = key
    return key


def _seal(text: str, body: str) -> str:
    return hmac.new(_key(), f"{FORMAT}\0{text}\0{body}".encode(), hashlib.sha256).hexdigest()


def get(text: str) -> tuple[object, dict] | None:
    """(data, lines) for these bytes, or None (also when the entry's seal does not match)."""
    try:
        kept = json.loads(_file(text).read_text())
        body = kept["body"]
        if not hmac.compare_digest(str(kept["seal"]), _seal(text, body)):
            return None
        inner = json.loads(body)
        lines = {tuple(loc): int(line) for loc, line in inner["lines"]}
        return inner["data"], lines
    except (OSError, ValueError, KeyError, TypeError):
        return None


def put(text: str, data: object, lines: dict) -> None:
    path = _file(text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"data": data, "lines": [[list(k), v] for k, v in lines.items()]})  # order kept: targets run in it
        from ..state import keep_file
        keep_file(path, json.dumps({"body": body, "seal": _seal(text, body)}).encode())
    except (OSError, TypeError, ValueError):
        pass


def _valid_file(text: str) -> Path:
    return _file(text).with_suffix(".valid")


def was_valid(text: str, model_print: str) -> bool:
    """These bytes validated in full against this very model before (see topology/construct.py)."""
    try:
        return hmac.compare_digest(_valid_file(text).read_text(), _seal(text, f"valid\0{model_print}"))
    except OSError:
        return False


def mark_valid(text: str, model_print: str) -> None:
    from ..state import keep_file

    keep_file(_valid_file(text), _seal(text, f"valid\0{model_print}").encode())
