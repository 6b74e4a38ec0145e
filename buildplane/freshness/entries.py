"""How one file of a context enters its digest: "x" or "-" (the exec bit) + the sha256 of its bytes, or
"link:" + a link's target. The walk (digests.py) and the tree memo's patch (worktree.py) both use it."""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(abspath: str, st: os.stat_result, hash_file: Callable[[str, os.stat_result], str]) -> str | None:
    """The entry of a file the builder is sent, None for anything else (a directory, a device).
    FileNotFoundError goes to the caller: a file gone while looked at is not sent either."""
    if stat.S_ISLNK(st.st_mode):
        return "link:" + os.readlink(abspath)
    if stat.S_ISREG(st.st_mode):
        return ("x" if st.st_mode & 0o111 else "-") + hash_file(abspath, st)
    return None
