"""Helm facts the product needs before it runs Helm: its major version (for the rollback flag)."""
from __future__ import annotations

import re

from ..errors import Missing
from .run import Runner

_cache: dict[str, int] = {}


def parse_version(text: str) -> int:
    """`helm version --short` output ("v4.1.4+g…", "v3.15.2+g…") → major version."""
    m = re.search(r"v(\d+)\.\d+", text)
    if not m:
        raise ValueError(f"unrecognised helm version output: {text.strip()[:80]!r}")
    return int(m.group(1))


def major_version(runner: Runner) -> int | None:
    """The installed Helm's major version; None when Helm is not installed."""
    try:
        path = runner.which("helm")
    except Missing:
        return None
    if path not in _cache:
        _cache[path] = parse_version(runner.run(["helm", "version", "--short"], timeout=20).stdout)
    return _cache[path]
