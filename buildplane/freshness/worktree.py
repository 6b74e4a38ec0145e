"""A large context's "nothing changed" from git's index, not from a walk.

A walk stats every file of the context in Python; on tens of thousands of files that is most of a no-op
run. Where the context lies in a git work tree, `git status` does the same comparison against the
index's stat data in C. Its answer, the index's identity and the stat of every path it lists (modified,
untracked, ignored: a file modified twice is listed the same way both times) make a *tree key*: equal
keys mean an equal tree, so the digest a walk once computed under that key stands.

The key is only trusted where git's view is the builder's: a context whose files git would report
differently (assume-unchanged or skip-worktree entries, submodules, nested repositories, attributes
or `core.autocrlf` that filter content, the repository's own `.git` sent in the context) gets no key
and is walked as before. Small contexts are walked too: for them a walk costs less than a git process.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BuildplaneError
from ..tools.run import CommandFailed
from .entries import file_entry, sha256_file
from ..state import packed, read_json, unpacked, write_json_atomic

if TYPE_CHECKING:
    from ..tools.run import Runner
    from .dockerignore import DockerIgnore

LARGE = 5000  # files: below this a walk is cheaper than a git process (bench/monorepo.py)
KEPT = 64  # contexts remembered
# Every setting that would make git skip or soften a comparison is pinned to the strict default.
STATUS = ["git", "--no-optional-locks", "-c", "core.fileMode=true", "-c", "core.ignoreStat=false",
          "-c", "core.checkStat=default", "-c", "core.trustCtime=true", "status", "--porcelain=v2", "-z",
          "--untracked-files=all", "--ignored=traditional", "--no-renames", "--", "."]
# git's own variables would point it at another repository or index than the context's.
_GIT_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_NAMESPACE",
            "GIT_COMMON_DIR", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT")


@dataclass(frozen=True)
class Repo:
    """The context's work tree top, and the files whose change can change what git reports."""

    top: str
    index: str
    config: str
    attributes: str  # info/attributes

    def guard(self) -> str:
        """The stat of the index and of every config that can filter content or soften a comparison."""
        home = os.path.expanduser("~")
        return "|".join(_stat(p) for p in (self.index, self.config, self.attributes,
                                           os.path.join(home, ".gitconfig"),
                                           os.path.join(home, ".config", "git", "config")))


@dataclass(frozen=True)
class TreeState:
    """A tree as git tells it: its key, the index's identity, and each listed path's record and stat."""

    key: str
    index: str
    listed: dict[str, str]
    top: str = ""
    written_ns: int = 0  # when the index was last written (its mtime)

    def unlisted_since_written(self, context: Path, rels: list[str]) -> bool:
        """Whether any of these context paths git does not list (calls clean)."""
        prefix = _prefix(context, self.top)
        return any(prefix + rel not in self.listed for rel in rels)


@dataclass
class TreeMemo:
    """context → its repository, last file count, and the digests recorded under a tree key."""

    path: Path
    runner: "Runner"
    entries: dict | None = None
    dirty: bool = False
    large: int = LARGE
    seen: dict = field(default_factory=dict)  # context → its state, asked once a plan (targets share contexts)

    def _load(self) -> dict:
        if self.entries is None:
            self.entries = read_json(self.path) or {}
        return self.entries

    def tree_state(self, context: Path) -> TreeState | None:
        """The context's tree as it stands, or None where only a walk can tell."""
        entry = self._load().get(str(context))
        if entry is None or entry.get("files", 0) < self.large or not entry.get("trusted") or not entry.get("repo"):
            return None
        repo = Repo(*entry["repo"])
        if repo.guard() != entry.get("trusted_for"):  # the index or a config moved: trusted again after a walk
            return None
        if str(context) not in self.seen:
            try:
                self.seen[str(context)] = tree_state(repo, self._git(STATUS, context))
            except (BuildplaneError, OSError):
                self.seen[str(context)] = None
        return self.seen[str(context)]

    def lookup(self, context: Path, tree: TreeState | None, spec: str) -> str | None:
        entry = self._load().get(str(context))
        if tree is None or entry is None:
            return None
        return entry.get("digests", {}).get(_spec_key(tree.key, spec))

    def patched(self, context: Path, tree: TreeState | None, ignore: "DockerIgnore") -> dict[str, str] | None:
        """The files of the last tree recorded with the paths git lists differently now read again, or None.
        Only where the index is the one of that tree: every path git lists in neither is then, both times,
        the index's content."""
        entry = self._load().get(str(context))
        if tree is None or entry is None or not entry.get("repo") or entry.get("index") != tree.index:
            return None
        last = read_json(self._files_path(context))
        if not last or last.get("tree") != entry.get("tree") or last.get("ignore") != ignore.signature:
            return None
        files, before = unpacked(last["files"]) or {}, last["listed"]
        top = tree.top
        prefix = _prefix(context, top)
        for path in set(before) | set(tree.listed):
            if before.get(path) == tree.listed.get(path) or not path.startswith(prefix):
                continue
            rel = path[len(prefix):]
            now = None if ignore.excluded(rel) else _read(os.path.join(top, path))
            if now is None:
                files.pop(rel, None)
            else:
                files[rel] = now
        return files

    def record(self, context: Path, tree: TreeState | None, spec: str, digest: str, files: dict[str, str],
               ignore: "DockerIgnore") -> None:
        """After a walk (or a patch): its file count, and its digest under the tree taken before it (an edit
        made meanwhile gives the next run another key: it is read again, never trusted)."""
        entries = self._load()
        before = entries.get(str(context))
        entry = dict(entries.pop(str(context), None) or {})
        entry["files"] = len(files)
        if len(files) >= self.large:
            if "repo" not in entry:  # asked once: a context outside a work tree is walked from then on
                found = self._repo(context)
                entry["repo"] = list(vars(found).values()) if found else None
            repo = Repo(*entry["repo"]) if entry["repo"] else None
            guard = repo.guard() if repo else None
            if repo is not None and entry.get("trusted_for") != guard:
                entry["trusted"], entry["trusted_for"] = self._trusted(context, repo), guard
        digests = dict(entry.get("digests", {})) if tree is not None and entry.get("tree") == tree.key else {}
        if tree is not None:
            digests[_spec_key(tree.key, spec)] = digest
            if entry.get("tree") != tree.key:  # the files a next edit is patched onto
                try:
                    write_json_atomic(self._files_path(context), {"tree": tree.key, "ignore": ignore.signature,
                                                                  "listed": tree.listed, "files": packed(files)})
                except (OSError, BuildplaneError):
                    pass  # a cache: the next edit walks
            entry["tree"], entry["index"] = tree.key, tree.index
        entry["digests"] = dict(list(digests.items())[-8:])
        entries[str(context)] = entry  # last used last: the oldest are dropped
        while len(entries) > KEPT:
            gone = next(iter(entries))
            entries.pop(gone)
            self._files_path(Path(gone)).unlink(missing_ok=True)
            self.dirty = True
        if entry != before:  # a small context's walk, the same again: no write on the no-op
            self.dirty = True

    def _files_path(self, context: Path) -> Path:
        return self.path.with_name(f"{self.path.stem}-{hashlib.sha256(str(context).encode()).hexdigest()[:16]}.json")

    def save(self) -> None:
        if self.dirty and self.entries is not None:
            try:
                write_json_atomic(self.path, self.entries)
            except (OSError, BuildplaneError):
                pass  # a cache: the next run walks
            self.dirty = False

    # -- git --------------------------------------------------------------------------------
    def _repo(self, context: Path) -> Repo | None:
        try:
            out = self._git(["git", "rev-parse", "--show-toplevel", "--git-path", "index", "--git-path", "config",
                             "--git-path", "info/attributes"], context)
        except (BuildplaneError, OSError):
            return None
        lines = out.splitlines()
        if len(lines) != 4:
            return None
        return Repo(lines[0], *(os.path.join(context, p) for p in lines[1:]))

    def _trusted(self, context: Path, repo: Repo) -> bool:
        """Whether git's status of this context tells every change the builder would see."""
        try:
            files = self._git(["git", "ls-files", "-s", "-v", "-z", "--", "."], context)
            config = self._git(["git", "config", "-z", "--get-regexp", r"^core\.(autocrlf|attributesfile)$"],
                               context, check=False)
        except (BuildplaneError, OSError):
            return False
        return trusted_listing(files) and not config.strip() and not os.path.exists(repo.attributes)

    def _git(self, argv: list[str], context: Path, check: bool = True) -> str:
        env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV}
        env["LC_ALL"] = "C"
        try:
            out = self.runner.capture(argv, timeout=30, env=env, cwd=str(context))
        except CommandFailed as exc:
            if check or exc.returncode is None:
                raise
            return ""  # `git config --get-regexp` finding nothing
        return out.decode("utf-8", "surrogateescape")  # names as the file system has them


def trusted_listing(ls_files: str) -> bool:
    """`git ls-files -s -v -z`: every entry a plain cached one ('H'), no submodule (160000), no
    `.gitattributes` (whose filters and eol rules let git call a changed file clean)."""
    for item in ls_files.split("\0"):
        if not item:
            continue
        meta, _, name = item.partition("\t")
        parts = meta.split()
        if len(parts) < 2 or parts[0] != "H" or parts[1] == "160000":
            return False
        if name == ".gitattributes" or name.endswith("/.gitattributes"):
            return False
    return True


def tree_state(repo: Repo, status: str) -> TreeState | None:
    """The tree from `git status --porcelain=v2 -z` output (paths from the work tree's top)."""
    written = os.stat(repo.index)
    with open(repo.index, "rb") as fh:
        fh.seek(-20, os.SEEK_END)
        index = _stat(repo.index) + ":" + fh.read(20).hex()  # with its checksum: rewritten within a tick
    listed = {}
    for path, record in listed_records(status):
        if path.endswith("/") or path.rsplit("/", 1)[-1] == ".gitattributes":
            return None  # a nested repository git does not list inside; attributes that may filter content
        listed[path] = f"{record}\0{_stat(os.path.join(repo.top, path))}"  # surrogates: a name's own bytes
    h = hashlib.sha256()
    h.update(b"buildplane-tree-v1\0")
    h.update(index.encode())
    h.update(json.dumps(listed, sort_keys=True).encode())  # ensure_ascii: a surrogate is escaped, not refused
    return TreeState(h.hexdigest(), index, listed, repo.top, written.st_mtime_ns)


def listed_records(status: str) -> list[tuple[str, str]]:
    """(path, record) of `git status --porcelain=v2 -z` ('1', 'u', '?', '!'; no renames asked)."""
    out = []
    for record in status.split("\0"):
        if not record:
            continue
        kind = record[0]
        if kind in "?!":
            out.append((record[2:], record))
        elif kind == "1":
            out.append((record.split(" ", 8)[8], record))
        elif kind == "u":
            out.append((record.split(" ", 10)[10], record))
        elif kind == "2":  # a rename although none was asked: read it as unknown
            out.append(("/", record))
    return out


def _read(abspath: str) -> str | None:
    """A listed path's entry now, read whole (a patch reads a few files: no stat cache to load)."""
    try:
        return file_entry(abspath, os.lstat(abspath), lambda path, _st: sha256_file(path))
    except FileNotFoundError:
        return None


def _prefix(context: Path, top: str) -> str:
    """The context's path in the work tree, as git lists paths ("" for the top)."""
    rel = os.path.relpath(context, top).replace(os.sep, "/")
    return "" if rel == "." else rel + "/"


def _stat(path: str) -> str:
    try:
        st = os.lstat(path)
    except OSError:
        return "-"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_mode}"


def _spec_key(tree: str, spec: str) -> str:
    return hashlib.sha256(json.dumps([tree, spec]).encode()).hexdigest()[:32]
