"""Helm facts the product needs before it runs Helm: its major version (for the rollback flag)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import Missing
from ..state import read_json, write_json_atomic
from .run import Runner

_cache: dict[str, int] = {}


def parse_version(text: str) -> int:
    """`helm version --short` output ("v4.1.4+g…", "v3.15.2+g…") → major version."""
    m = re.search(r"v(\d+)\.\d+", text)
    if not m:
        raise ValueError(f"unrecognised helm version output: {text.strip()[:80]!r}")
    return int(m.group(1))


def major_version(runner: Runner, cache_file: Path | None = None) -> int | None:
    """The installed Helm's major version; None when Helm is not installed.

    `helm version` costs ~100 ms, so the answer is kept per binary (path, size, mtime) in cache_file.
    """
    try:
        path = runner.which("helm")
    except Missing:
        return None
    st = os.stat(path)
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    if key in _cache:
        return _cache[key]
    stored = (read_json(cache_file) if cache_file is not None else None) or {}
    if key not in stored:
        stored[key] = parse_version(runner.run(["helm", "version", "--short"], timeout=20).stdout)
        if cache_file is not None:
            try:
                write_json_atomic(cache_file, stored)
            except OSError:
                pass  # a cache: asking again next time is the only cost
    _cache[key] = stored[key]
    return stored[key]
