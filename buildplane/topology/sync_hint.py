"""When a sync rule would help: a target without rules whose final stage copies more than a few thousand
context files with one `COPY`. A one-file edit there makes BuildKit copy and export that whole layer again
(a monorepo's asset tree: seconds), where a sync rule takes such edits as one small layer. The rule is
the one `sync_rules.resolve` would accept, so `up` and `explain` can print it to paste.
"""
from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from pathlib import Path

from .sync_rules import _copies, _stage_chain, normal_src

MANY_FILES = 3000  # past this a COPY's layer costs more than a sync of one edit, by far


@dataclass(frozen=True)
class Suggestion:
    src: str  # context-relative, as a rule's src
    dest: str
    line: int
    files: int

    def rule(self) -> str:
        return f"sync: [{{src: {self.src or '.'}, dest: {self.dest}}}]"

    def sentence(self, target: str) -> str:
        return (f"{target}: `COPY {self.src or '.'} {self.dest}` (Dockerfile line {self.line}) copies {self.files} files, "
                f"so a one-file edit there rebuilds and pushes that whole layer; a sync rule takes such edits "
                f"without a build — add to targets.{target}: {self.rule()}")


def suggest(context: Path, dockerfile: Path, build_target: str | None, build_args: dict[str, str],
            files: dict[str, str], threshold: int = MANY_FILES) -> list[Suggestion]:
    """The final stage's plain context COPYs of a directory holding more than `threshold` of `files`."""
    from dockerfile_parse import DockerfileParser

    text = dockerfile.read_text(encoding="utf-8", errors="replace")
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()), build_args=build_args)
    chain, _, _ = _stage_chain(parser.structure, build_target)
    out = []
    names = [n for n in files if not n.startswith("<")]
    for copy in _copies(chain):
        if not copy.plain or not copy.dest or copy.add or len(copy.srcs) != 1:
            continue
        src = normal_src(copy.srcs[0])
        if src is None or any(c in copy.srcs[0] for c in "*?[") or not (context / src if src else context).is_dir():
            continue
        count = sum(1 for n in names if not src or n.startswith(src + "/"))
        if count > threshold:
            dest = copy.dest if copy.dest.endswith("/") else copy.dest + "/"
            out.append(Suggestion(src + "/" if src else "", "/" + posixpath.normpath(dest).lstrip("/") + "/"
                                  if dest != "/" else "/", copy.line, count))
    return out


def say_once(state_root: Path, mode: str, target: str, dockerfile: Path, found: list[Suggestion], log) -> None:
    """Log each suggestion once per Dockerfile and suggestion (kept under the state dir), not on every build."""
    import hashlib
    import json
    from ..state import keep_file

    if not found:
        return
    key = hashlib.sha256(json.dumps([dockerfile.read_bytes().hex(), [s.rule() for s in found]]).encode()).hexdigest()
    mark = state_root / "hints" / f"sync-{mode}-{target}"
    try:
        if mark.read_text() == key:
            return
    except OSError:
        pass
    for s in found:
        log(s.sentence(target))
    keep_file(mark, key.encode())
