"""The working tree's commit, for tags and events: read from `.git` where that is plain, else asked of git.

Reading HEAD and its ref from the repository's files costs a few stat calls; a `git rev-parse` costs a
process start (and the process machinery's import) on every run, the no-op one included.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import Missing
from .run import Runner


def git_sha(runner: Runner, cwd: Path) -> str:
    """Short commit of the working tree, or 'nogit' outside a repository: read from `.git` where that is
    plain (no git process on the no-op path), else asked of git."""
    sha = git_head(cwd)
    if sha is not None:
        return sha[:12] or "nogit"
    try:
        res = runner.run(["git", "rev-parse", "--short=12", "HEAD"], timeout=10, cwd=str(cwd), check=False)
    except Missing:  # git missing is not an error for a build
        return "nogit"
    return res.stdout.strip() if res.exit_code == 0 and res.stdout.strip() else "nogit"


def git_head(cwd: Path) -> str | None:
    """HEAD's commit from the repository's files: `.git` a directory (not a worktree's file), HEAD a
    branch whose ref is a loose file or in packed-refs, or detached; "" where no `.git` is above `cwd`.
    None for anything else (git decides)."""
    if any(k in os.environ for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_CEILING_DIRECTORIES")):
        return None
    for d in (cwd.resolve(), *cwd.resolve().parents):
        git = d / ".git"
        if git.is_dir():
            break
        if git.exists():
            return None  # a worktree or submodule: `.git` is a file pointing elsewhere
    else:
        return ""
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head if re.fullmatch(r"[0-9a-f]{40}", head) else None
        ref = head[5:]
        loose = git / ref
        if loose.is_file():
            sha = loose.read_text().strip()
        else:
            packed = (git / "packed-refs").read_text() if (git / "packed-refs").is_file() else ""
            sha = next((ln.split()[0] for ln in packed.splitlines() if ln.endswith(" " + ref)), "")
    except OSError:
        return None
    return sha if re.fullmatch(r"[0-9a-f]{40}", sha) else None
