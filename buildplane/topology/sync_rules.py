"""Sync rules (`targets.*.sync`): where an edit may reach the image without a build.

A rule `{src, dest}` says that the context's `src` is in the image at `dest` because a `COPY` (or
`ADD`) of the target's final stage put it there. That is checked at load against the Dockerfile
itself, read with a maintained parser (dockerfile-parse), so a rule can never put a file where no
build would; a rule that matches no COPY is bad input naming what the Dockerfile copies instead.
The answer is kept by the Dockerfile's content and the rules, so a no-op run parses nothing.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from ..topology.yaml_lines import expand_env

FORMAT = "2-1"  # bump when the kept answer changes shape
_CONTEXT_FLAGS = ("--chown", "--chmod", "--link")  # a COPY with any other flag is not a plain context copy


@dataclass(frozen=True)
class SyncTarget:
    """One sync rule, resolved: context-relative `src` ("" = the whole context) lands at image path `dest`."""

    src: str
    dest: str
    is_dir: bool
    line: int  # the matching COPY's Dockerfile line (1-based)
    chown: str | None = None  # the COPY's --chown, as written
    chmod: str | None = None  # the COPY's --chmod, as written

    def covers(self, rel: str) -> bool:
        return (rel == self.src) or (self.is_dir and (not self.src or rel.startswith(self.src + "/")))

    def image_path(self, rel: str) -> str:
        """Where the context file `rel` (covered by this rule) is in the image."""
        rest = rel[len(self.src):].lstrip("/") if self.src else rel
        return image_norm(posixpath.join(self.dest, rest)) if rest else self.dest


def image_norm(path: str) -> str:
    """An absolute image path in one form: POSIX normpath keeps a leading `//` (`COPY rootfs/ /` gives
    `//`), which names no other place in an image."""
    return "/" + posixpath.normpath(path).lstrip("/")


class RuleError(Exception):
    """A rule that cannot hold: (rule index, key, message)."""

    def __init__(self, index: int, key: str, message: str) -> None:
        super().__init__(message)
        self.index, self.key, self.message = index, key, message


def normal_src(src: str) -> str | None:
    """The rule's source as a context-relative posix path ("" for the context itself), or None when it
    leaves the context (absolute, or `..` past its root)."""
    if src.startswith("/") or "\\" in src:
        return None
    norm = posixpath.normpath(src.strip() or ".")
    if norm == ".":
        return ""
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


def check_forms(rules, context: Path) -> list[tuple[str, str]]:
    """(src, dest) of each rule in normal form; RuleError for a source outside the context, a missing
    source, a link that escapes it, or a destination that is not absolute."""
    out = []
    root = context.resolve()
    for i, rule in enumerate(rules):
        src = normal_src(rule.src)
        if src is None:
            raise RuleError(i, "src", f"{rule.src!r} leaves the build context; valid: a path relative to "
                                      f"{context} without '..' past it")
        if not rule.dest.startswith("/"):
            raise RuleError(i, "dest", f"{rule.dest!r} is not absolute; valid: the image path the files land at, "
                                       "e.g. /srv/www/")
        path = context / src
        if not os.path.lexists(path):
            raise RuleError(i, "src", f"{path} does not exist; valid: a file or directory of the build context")
        # A link *inside* src is copied as a link, by a build and by a sync alike, wherever it points; only
        # a src that is itself a link out of the context names something the context does not hold.
        if os.path.islink(path) and not _inside(os.path.realpath(path), str(root)):
            raise RuleError(i, "src", f"{path} is a symbolic link that leads out of the build context; "
                                      "sync only what the context holds")
        out.append((src, image_norm(rule.dest)))
    return out


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


# ---- the Dockerfile side ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Copy:
    srcs: tuple[str, ...]
    dest: str  # absolute, or "" when it cannot be known (relative with no WORKDIR, or a variable)
    line: int
    chown: str | None
    chmod: str | None
    plain: bool  # a copy from the context (no --from, --parents, --exclude; no URL)
    add: bool = False  # ADD: a local archive among its sources is unpacked, not copied

    def shown(self) -> str:
        return f"{' '.join(self.srcs)} → {self.dest or '?'} (line {self.line})"


def _stage_chain(structure: list[dict], build_target: str | None) -> tuple[list[dict], str, int]:
    """The instructions of the final stage and the stages it is built FROM, in order; its name and FROM line."""
    stages: list[dict] = []
    for ins in structure:
        if ins["instruction"] == "FROM":
            words = [w for w in ins["value"].split() if not w.startswith("--")]
            name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else ""
            stages.append({"name": name, "base": (words[0].lower() if words else ""), "line": ins["startline"] + 1,
                           "body": []})
        elif stages:
            stages[-1]["body"].append(ins)
    if not stages:
        return [], "", 0
    by_name = {s["name"]: s for s in stages if s["name"]}
    final = by_name.get(build_target.lower()) if build_target else stages[-1]
    if final is None:
        return [], build_target or "", 0
    chain, stage, seen = [], final, set()
    while stage is not None and id(stage) not in seen:
        seen.add(id(stage))
        chain = stage["body"] + chain
        stage = by_name.get(stage["base"])
    return chain, final["name"] or "the last stage", final["line"]


def _copies(chain: list[dict]) -> list[_Copy]:
    out, workdir = [], ""
    for ins in chain:
        kind, value = ins["instruction"], ins["value"]
        if kind == "WORKDIR":
            workdir = posixpath.join(workdir or "/", value.strip()) if "$" not in value else ""
            continue
        if kind not in ("COPY", "ADD"):
            continue
        words = _words(value)
        flags = [w for w in words if w.startswith("--")]
        args = [w for w in words if not w.startswith("--")]
        if len(args) < 2:
            continue
        srcs, dest = args[:-1], args[-1]
        if "$" in dest:
            dest_abs = ""
        elif dest.startswith("/"):
            dest_abs = dest
        else:
            dest_abs = posixpath.join(workdir, dest) if workdir else ""
        if dest_abs and dest.endswith("/"):
            dest_abs += "/"
        plain = all(f.split("=", 1)[0] in _CONTEXT_FLAGS for f in flags) and not any(
            "://" in s or "$" in s for s in srcs)
        opt = {f.split("=", 1)[0]: f.split("=", 1)[1] for f in flags if "=" in f}
        out.append(_Copy(tuple(srcs), dest_abs, ins["startline"] + 1, opt.get("--chown"), opt.get("--chmod"), plain,
                         add=kind == "ADD"))
    return out


def _words(value: str) -> list[str]:
    text = value.strip()
    flags = []
    while text.startswith("--"):
        flag, _, text = text.partition(" ")
        flags.append(flag)
        text = text.lstrip()
    if text.startswith("["):
        try:
            return flags + [str(w) for w in json.loads(text)]
        except ValueError:
            pass
    try:
        return flags + shlex.split(text)
    except ValueError:
        return flags + text.split()


def _match(src: str, dest: str, copy: _Copy, context: Path) -> bool:
    """Does this COPY put the context's `src` at `dest`?"""
    if not copy.plain or not copy.dest:
        return False
    into_dir = copy.dest.endswith("/") or len(copy.srcs) > 1
    for raw in copy.srcs:
        s = normal_src(raw)
        if s is None or any(c in raw for c in "*?["):
            continue
        if (context / s).is_dir() if s else True:  # a directory's contents land in dest
            if s == src or not s or src.startswith(s + "/"):
                rest = src[len(s):].lstrip("/")
                if image_norm(posixpath.join(copy.dest, rest)) == dest:
                    return True
        elif s == src:
            landing = posixpath.join(copy.dest, posixpath.basename(s)) if into_dir else copy.dest
            if image_norm(landing) == dest:
                return True
    return False


def _unpacked_archive(copy: _Copy, src: str, context: Path) -> str | None:
    """A local archive this ADD unpacks that lies inside the rule's src (ADD unpacks a source file that is a
    tar, plain or compressed; a directory's contents are copied as they are)."""
    import tarfile
    for raw in copy.srcs:
        s = normal_src(raw)
        if s is None or not (s == src or not src or s.startswith(src + "/")):
            continue
        path = context / s
        if path.is_file() and tarfile.is_tarfile(path):
            return str(path)
    return None


def resolve(rules, context: Path, dockerfile: Path, build_target: str | None,
            build_args: dict[str, str]) -> list[SyncTarget]:
    """Each rule matched to the COPY of the final stage that puts its files there; RuleError otherwise.
    Kept by the Dockerfile's bytes, the rules and what is a directory, so a no-op run parses nothing."""
    forms = check_forms(rules, context)
    dirs = [(context / s).is_dir() if s else True for s, _ in forms]
    text = dockerfile.read_text(encoding="utf-8", errors="replace")
    key = hashlib.sha256(json.dumps([FORMAT, text, forms, dirs, build_target,
                                     sorted(build_args.items())]).encode()).hexdigest()
    kept = _cache_get(key)
    if kept is not None:
        return kept
    from dockerfile_parse import DockerfileParser  # ~17 ms to import: only when a Dockerfile or rule is new

    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()), build_args=build_args)
    chain, stage, from_line = _stage_chain(parser.structure, build_target)
    copies = _copies(chain)
    out = []
    for i, ((src, dest), is_dir) in enumerate(zip(forms, dirs)):
        found = [c for c in copies if _match(src, dest, c, context)]
        if not found:
            what = "; ".join(c.shown() for c in copies) or "nothing from the context"
            raise RuleError(i, "src", f"no COPY of {dockerfile}'s final stage `{stage}` (FROM at line {from_line}) "
                                      f"puts {src or '.'} at {dest}; expected `COPY {src or '.'} {dest}` there, "
                                      f"it copies: {what}")
        c = found[-1]  # the last copy wins, as in the image
        archive = _unpacked_archive(c, src, context) if c.add else None
        if archive:
            raise RuleError(i, "src", f"`ADD` at {dockerfile} line {c.line} unpacks the archive {archive} into the "
                                      "image; a sync would put the archive itself there. Use COPY for files to sync, "
                                      "or drop this rule (that target then builds)")
        out.append(SyncTarget(src, dest, is_dir, c.line, c.chown, c.chmod))
    _cache_put(key, out)
    return out


def for_target(topo, name: str, base: Path) -> list[SyncTarget]:
    """The resolved sync rules of a target as the working tree stands (none: an empty list)."""
    from ..contract import base_image_arg, project_path

    t = topo.targets[name]
    if not t.sync:
        return []
    key = (id(topo), name, str(base))  # load checks the rules, plan and explain use them: one check a run
    if key not in _RESOLVED:
        args = {k: expand_env(v) for k, v in {**base_image_arg(topo), **t.build_args}.items()}
        _RESOLVED[key] = (topo, resolve(t.sync, project_path(base, t.context), project_path(base, t.dockerfile),
                                        t.build_target, args))
    return _RESOLVED[key][1]


# ---- the kept answers -------------------------------------------------------------------------

_MEMO: dict[str, list[SyncTarget]] = {}
_RESOLVED: dict[tuple, tuple] = {}  # (topology object, target, base) → (the topology, kept alive for its id; rules)


def _cache_file(key: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path(os.environ.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "buildplane" / "sync-rules" / f"{key}.json"


def _cache_get(key: str) -> list[SyncTarget] | None:
    if key in _MEMO:
        return _MEMO[key]
    try:
        kept = [SyncTarget(**d) for d in json.loads(_cache_file(key).read_text())]
    except (OSError, ValueError, TypeError):
        return None
    _MEMO[key] = kept
    return kept


def _cache_put(key: str, value: list[SyncTarget]) -> None:
    _MEMO[key] = value
    from ..state import keep_file

    keep_file(_cache_file(key), json.dumps([asdict(v) for v in value]).encode())

