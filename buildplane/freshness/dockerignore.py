"""`.dockerignore` matching with the builder's semantics (patterns, `**`, `!` exceptions, last match wins)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern
    negate: bool
    dir_only_prefix: bool


def _translate(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.find("]", i)
            if j == -1:
                out += re.escape(c)
            else:
                out += "[" + pattern[i + 1 : j].replace("\\", "\\\\") + "]"
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return out


class DockerIgnore:
    """Decides whether a context-relative path (with '/' separators) is excluded."""

    def __init__(self, lines: list[str], source: Path | None = None) -> None:
        self.rules: list[_Rule] = []
        # What decides the sent files, for a memo of them: the file that gave the rules, and the rules.
        self.signature = hashlib.sha256(repr((str(source), lines)).encode()).hexdigest()[:32]
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:].strip()
            line = re.sub(r"/+", "/", line).strip("/")
            if line.startswith("./"):
                line = line[2:]
            if not line or line == ".":
                continue
            # A pattern also excludes everything below a matching directory.
            try:
                regex = re.compile(_translate(line) + "(?:/.*)?$")
            except re.error as exc:
                raise BadInput(f"{source or '.dockerignore'}:{number}: {raw.strip()!r} is not a valid pattern "
                               f"({exc.msg}); the builder would refuse it too") from None
            self.rules.append(_Rule(regex, negate, False))

    @classmethod
    def for_context(cls, context: Path, dockerfile: Path | None = None) -> "DockerIgnore":
        # buildx prefers <Dockerfile>.dockerignore next to the Dockerfile, then <context>/.dockerignore.
        candidates = []
        if dockerfile is not None:
            candidates.append(dockerfile.with_name(dockerfile.name + ".dockerignore"))
        candidates.append(context / ".dockerignore")
        for c in candidates:
            if c.is_file():
                return cls(c.read_text(encoding="utf-8", errors="replace").splitlines(), c)
        return cls([])

    def excluded(self, rel: str) -> bool:
        result = False
        for rule in self.rules:
            if rule.negate == result and rule.regex.match(rel):
                result = not rule.negate
        return result

    @property
    def has_negations(self) -> bool:
        return any(r.negate for r in self.rules)
