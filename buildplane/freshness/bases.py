"""Base images: a moved tag (`FROM python:3.12-slim` re-pushed upstream or in the mirror) is a changed input.

The rule (README, "When does a target rebuild?"): the image inputs hold what each external `FROM`
resolves to — its manifest digest — not only its name. Asking the registry costs a round trip per base,
so an answer is kept for BASE_MAX_AGE_S (default 10 minutes, `$BUILDPLANE_BASE_MAX_AGE_S`); `--pull`
asks now and has buildx pull the bases too. A base that cannot be resolved (offline, no credentials)
counts by its name, with a note, and never fails a run. A `FROM image@sha256:…` is already pinned.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Callable

from ..errors import BuildplaneError
from ..state import read_json, write_json_atomic

BASE_MAX_AGE_S = float(os.environ.get("BUILDPLANE_BASE_MAX_AGE_S", "600"))
UNRESOLVED = "unresolved"
FROMS = "<froms>"  # the state file's key for each Dockerfile's FROM list (no image ref looks like it)


def external_bases(dockerfile_text: str, build_args: dict[str, str]) -> list[str]:
    """The images the Dockerfile's FROMs pull (ARGs substituted); stage names and `scratch` are not."""
    from dockerfile_parse import DockerfileParser  # ~17 ms to import: only when a Dockerfile is new

    parser = DockerfileParser(fileobj=io.BytesIO(dockerfile_text.encode()), build_args=build_args)
    stages: set[str] = set()
    out: list[str] = []
    for instr in parser.structure:
        if instr["instruction"] != "FROM":
            continue
        words = [w for w in instr["value"].split() if not w.startswith("--")]
        if len(words) >= 3 and words[-2].lower() == "as":
            stages.add(words[-1].lower())
    for image in parser.parent_images:
        if image and image.lower() not in stages and image != "scratch" and image not in out and "$" not in image:
            out.append(image)
    return out


def registry_ref(image: str) -> str:
    """`python:3.12-slim` → `registry-1.docker.io/library/python:3.12-slim`; a ref with a host stays."""
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        if first != "docker.io":
            return image
        image, first, _, rest = rest, *rest.partition("/")
    return "registry-1.docker.io/" + (image if rest else "library/" + image)


class BaseDigests:
    """Resolved base digests, kept in one state file with when each was asked."""

    def __init__(self, path: Path | None, lookup: Callable[[str], str | None], *, now: Callable[[], float] = time.time,
                 max_age_s: float = BASE_MAX_AGE_S, log: Callable[[str], None] | None = None) -> None:
        self.path, self.lookup, self.now, self.max_age_s, self.log = path, lookup, now, max_age_s, log
        self.known: dict[str, dict] = (read_json(path) if path is not None else None) or {}
        self.dirty = False

    def bases_of(self, dockerfile_digest: str, build_args: dict[str, str], read: Callable[[], str]) -> list[str]:
        """The Dockerfile's external FROMs, parsed once per content and build args (a no-op run parses nothing)."""
        key = hashlib.sha256(json.dumps([dockerfile_digest, sorted(build_args.items())]).encode()).hexdigest()
        froms = self.known.setdefault(FROMS, {})
        if not isinstance(froms.get(key), list):
            froms[key] = external_bases(read(), build_args)
            self.dirty = True
        return list(froms[key])

    def resolve(self, images: list[str], *, pull: bool = False) -> dict[str, str]:
        out: dict[str, str] = {}
        for image in images:
            pinned = re.search(r"@(sha256:[0-9a-f]{64})$", image)
            if pinned:
                out[image] = pinned.group(1)
                continue
            seen = self.known.get(image)
            if seen and not pull and self.now() - float(seen.get("at", 0)) < self.max_age_s:
                out[image] = str(seen.get("digest", UNRESOLVED))
                continue
            out[image] = self._ask(image, seen)
        return out

    def _ask(self, image: str, seen: dict | None) -> str:
        try:
            digest = self.lookup(registry_ref(image)) or UNRESOLVED
        except BuildplaneError as exc:
            digest = UNRESOLVED
            if self.log:
                self.log(f"base image {image}: not resolved ({exc.message}); it counts by name until it is")
        if digest == UNRESOLVED and seen and seen.get("digest") not in (None, UNRESOLVED):
            digest = str(seen["digest"])  # offline for now: the last answer is better than none
        self.known[image] = {"digest": digest, "at": self.now()}
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty and self.path is not None:
            try:
                write_json_atomic(self.path, self.known)
            except OSError:
                pass
