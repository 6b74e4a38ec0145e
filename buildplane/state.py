"""Everything buildplane keeps between runs lives under one directory (`.buildplane/`, or
`$BUILDPLANE_STATE_DIR`); this module owns its layout and the only JSON reader and writer of it.

Writes are atomic (temp file + rename), so concurrent runs never read a torn file; reads are
tolerant, since a missing or torn record only means "nothing known yet".
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput, StepFailed

DEFAULT_DIR = ".buildplane"


def read_json(path: Path) -> dict | None:
    """The file's object, or None when it is missing, torn or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def packed(files: dict[str, str]) -> str:
    """A file map as one string (name NUL hash NUL …), for a record: JSON reads one string of a large
    tree's map in a fraction of the time 50,000 keys take, and only a run that compares files unpacks it."""
    return "\0".join([x for kv in files.items() for x in kv])


def unpacked(value: object) -> dict[str, str] | None:
    """A record's file map, packed or (written before packing) a JSON object; None when absent."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        return None
    items = iter(value.split("\0")) if value else iter(())
    return dict(zip(items, items))


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600: state may name secrets' owners
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException as exc:  # a full disk (ENOSPC) or an interrupt: no temp file left behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise StepFailed(f"cannot write {path} ({os.strerror(exc.errno)}): buildplane keeps what it built "
                             f"and released under {path.parent}; free space there or point BUILDPLANE_STATE_DIR "
                             "elsewhere") from None
        raise


def keep_file(path: Path, data: bytes) -> None:
    """A cache file, written atomically; one that cannot be written only costs the next run its work."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
    except OSError:
        pass


@dataclass(frozen=True)
class StateDir:
    """The paths of every record, lock and output under the state directory."""

    root: Path

    @classmethod
    def from_env(cls, environ=None, base: Path | None = None) -> "StateDir":
        """`$BUILDPLANE_STATE_DIR`, else `.buildplane` (relative to `base` when given)."""
        environ = os.environ if environ is None else environ
        explicit = environ.get("BUILDPLANE_STATE_DIR")
        if explicit:
            return cls(Path(explicit))
        return cls(base / DEFAULT_DIR if base is not None else Path(DEFAULT_DIR))

    def check_writable(self) -> None:
        """A run records what it did here: refuse up front (exit 2) rather than fail half-way."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            problem = None if os.access(self.root, os.W_OK | os.X_OK) else "permission denied"
        except OSError as exc:
            problem = exc.strerror
        if problem:
            raise BadInput(f"state dir {self.root} is not writable ({problem}); "
                           "set BUILDPLANE_STATE_DIR to a writable directory")

    # -- caches -------------------------------------------------------------------------------
    @property
    def statcache(self) -> Path:
        return self.root / "statcache.json"

    @property
    def tree_memo(self) -> Path:
        return self.root / "trees.json"

    @property
    def release_statcache(self) -> Path:
        return self.root / "statcache-release.json"

    @property
    def base_digests(self) -> Path:
        """What each base image (FROM) resolved to, and when it was asked."""
        return self.root / "state" / "base-digests.json"

    @property
    def builder_caps(self) -> Path:
        """Whether each builder (by endpoint, builder name and buildx binary) exports registry cache."""
        return self.root / "state" / "builder-caps.json"

    @property
    def registry_challenges(self) -> Path:
        """Each registry's auth challenge (scheme, realm, service: never a credential)."""
        return self.root / "state" / "registry-challenges.json"

    @property
    def helm_version(self) -> Path:
        return self.root / "state" / "helm-version.json"

    # -- records of what went out ---------------------------------------------------------------
    def build_record(self, mode: str, target: str) -> Path:
        return self.root / "state" / f"build-{mode}-{target}.json"

    def release_record(self, mode: str, target: str) -> Path:
        return self.root / "state" / f"release-{mode}-{target}.json"

    def cache_export(self, mode: str, target: str) -> Path:
        """The last registry cache export of a target in a mode: running, done or failed (and its pid)."""
        return self.root / "state" / f"cache-export-{mode}-{target}.json"

    def cache_export_log(self, mode: str, target: str) -> Path:
        """What a background cache export printed (buildx's progress; masked)."""
        return self.root / "logs" / f"cache-export-{mode}-{target}.log"

    def build_metadata(self, mode: str, target: str) -> Path:
        """buildx --metadata-file output (the pushed digest)."""
        return self.root / "builds" / f"{mode}-{target}.json"

    def image_layout(self, mode: str, target: str) -> Path:
        """The OCI layout buildx writes the image to, kept between builds (tools/layout_push.py)."""
        return self.root / "layouts" / f"{mode}-{target}"

    def image_values(self, mode: str, target: str) -> Path:
        """The values file that carries the image to Helm (never `--set`: no string may become a key)."""
        return self.root / "values" / f"{mode}-{target}-image.json"

    def rendered(self, mode: str, target: str) -> Path:
        """`helm template` output, when no kube context allows a real release."""
        return self.root / "rendered" / f"{mode}-{target}.yaml"

    # -- processes, locks, events --------------------------------------------------------------
    def lock(self, target: str) -> Path:
        return self.root / "locks" / f"{target}.lock"

    @property
    def children(self) -> Path:
        """Records of the child processes running now (found again if the run is killed)."""
        return self.root / "children"

    @property
    def tilt(self) -> Path:
        """The Tilt process `buildplane tilt up` became."""
        return self.root / "tilt.json"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"
