"""buildx facts, parsed apart from running it: progress output → cached/total steps; builder capabilities."""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import Missing
from ..state import read_json, write_json_atomic
from .builders import BuilderChoice, endpoint_is_local

_VERTEX = re.compile(r"^#(\d+) \[(?!internal\])([^\]]*?)\s*(\d+)/(\d+)\] (\w+)")
_CACHED = re.compile(r"^#(\d+) CACHED\s*$")
_BODY = re.compile(r"^#(\d+) (.*)$")
# A step restored from a remote cache shows only its layer blobs being fetched, then DONE.
_BLOB = re.compile(r"^(sha256:[0-9a-f]{64} [\d.]+[kMG]?B / [\d.]+[kMG]?B|extracting sha256:[0-9a-f]{64}|\.\.\.$)")


# A push the registry broke off: BuildKit's "unexpected status from HEAD request to URL: 500 …", or a
# connection reset / EOF while talking to it. Transient: the same push again usually goes through.
_PUSH_STATUS = re.compile(r"unexpected status(?: code)? from \w+ request to (\w+://([^/\s]+)/\S*): (5\d\d\b[^\n]*)")
_PUSH_RESET = re.compile(r'(?:Head|Get|Put|Post|Patch) "(\w+://([^/"]+)/[^"]*)":.*?'
                         r"(connection reset by peer|broken pipe|unexpected EOF|EOF)\s*$")


@dataclass(frozen=True)
class PushFailure:
    """A registry fault during the build's push, worth retrying."""

    registry: str  # host[:port]
    status: str  # "500 Internal Server Error" or "connection reset by peer"
    url: str


def push_failure(lines: list[str]) -> PushFailure | None:
    """The last transient registry fault in buildx output, or None when the failure was something else."""
    for line in reversed(lines):
        m = _PUSH_STATUS.search(line)
        if m:
            return PushFailure(m.group(2), m.group(3).strip(), m.group(1))
        m = _PUSH_RESET.search(line.rstrip())
        if m:
            return PushFailure(m.group(2), m.group(3), m.group(1))
    return None


_PUSHED_DIGEST = re.compile(r"\bdigest: (sha256:[0-9a-f]{64})\b")


def pushed_digest(output: str) -> str | None:
    """The manifest digest `docker push` reports ("bp-…: digest: sha256:… size: 1234")."""
    found = _PUSHED_DIGEST.findall(output)
    return found[-1] if found else None


@dataclass(frozen=True)
class BuildProgress:
    total_steps: int
    cached_steps: int


def parse_progress(lines: list[str]) -> BuildProgress:
    """Count Dockerfile steps (not FROM, not buildx internals) and those reported CACHED, from --progress plain."""
    steps: dict[str, str] = {}  # vertex number → step label
    cached: set[str] = set()
    blobs: dict[str, int] = {}  # vertex → blob-fetch lines seen
    worked: set[str] = set()  # vertices that printed anything else (ran, or transferred context)
    for line in lines:
        m = _VERTEX.match(line)
        if m and m.group(5).upper() != "FROM":
            steps.setdefault(m.group(1), f"{m.group(2)} {m.group(3)}/{m.group(4)}")
            continue
        c = _CACHED.match(line)
        if c:
            cached.add(c.group(1))
            continue
        b = _BODY.match(line)
        if b and b.group(1) in steps and not b.group(2).startswith(("DONE", "[")):
            if _BLOB.match(b.group(2)):
                blobs[b.group(1)] = blobs.get(b.group(1), 0) + 1
            else:
                worked.add(b.group(1))
    cached |= {v for v, n in blobs.items() if n and v not in worked}
    labels = set(steps.values())
    cached_labels = {steps[v] for v in cached if v in steps}
    return BuildProgress(total_steps=len(labels), cached_steps=len(cached_labels))


def read_metadata_digest(path: Path) -> str | None:
    """`containerimage.digest` from buildx --metadata-file."""
    try:
        return json.loads(path.read_text()).get("containerimage.digest")
    except (OSError, ValueError):
        return None


def supports_registry_cache(driver: str, driver_status: list) -> bool:
    """The docker driver exports registry cache only with the containerd image store."""
    if driver != "docker":
        return True
    return any(str(k).lower() == "driver-type" and "containerd.snapshotter" in str(v) for k, v in driver_status)


# buildx before 0.21 pushes every tag a second time after BuildKit's own push (docker driver): there the
# image goes to the image store and leaves with one `docker push` instead.
PUSHES_ONCE_FROM = (0, 21)


@dataclass(frozen=True)
class BuilderInfo:
    """What a run needs to know of its builder; asked once per builder and kept (`cached_capability`)."""

    registry_cache: bool  # can export a registry build cache (and OCI layouts: the same exporters)
    who: str  # "builder default (driver docker)"
    driver: str = "docker"
    version: tuple[int, int] | None = None  # buildx's own (major, minor)
    local: bool = False  # the builder runs on this machine (a unix socket): its output may come here

    @property
    def push(self) -> str:
        """How the image leaves the builder:
        - "layout": an OCI layout on this machine, pushed by buildplane (tools/layout_push.py): the fewest
          round trips, for a builder on this machine that writes OCI layouts;
        - "docker-push": the image store and one `docker push` (buildx < 0.21, docker driver);
        - "buildx": `--push`, once (a remote builder: its blobs go straight to the registry)."""
        if self.local and self.registry_cache:
            return "layout"
        if self.driver == "docker" and self.version is not None and self.version < PUSHES_ONCE_FROM:
            return "docker-push"
        return "buildx"

    def to_json(self) -> dict:
        return {"registry_cache": self.registry_cache, "who": self.who, "driver": self.driver,
                "version": list(self.version) if self.version else None, "local": self.local}

    @classmethod
    def from_json(cls, data) -> "BuilderInfo | None":
        if not isinstance(data, dict) or not isinstance(data.get("who"), str) or "local" not in data:
            return None  # an older record's shape: ask again
        v = data.get("version")
        version = (int(v[0]), int(v[1])) if isinstance(v, list) and len(v) == 2 else None
        return cls(bool(data.get("registry_cache")), data["who"], str(data.get("driver") or "docker"), version,
                   bool(data["local"]))


_VERSION = re.compile(r"^github\.com/docker/buildx\s+v?(\d+)\.(\d+)")


def parse_version(text: str) -> tuple[int, int] | None:
    """`docker buildx version` → (major, minor): "github.com/docker/buildx v0.13.1 …" or "… 0.29.1+ds1 …"."""
    m = _VERSION.match(text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def probe_builder(choice: BuilderChoice = BuilderChoice()) -> BuilderInfo:
    """Ask the run's builder, through python-on-whales: its driver, whether it exports registry cache,
    and buildx's version. A Docker context is asked through that context, a builder instance by name."""
    from python_on_whales import DockerClient  # imported here: only a real build needs it

    from python_on_whales.exceptions import DockerException

    docker = DockerClient(context=choice.name) if choice.context else DockerClient()
    try:
        builder = docker.buildx.inspect(choice.name if choice.name and not choice.context else None)
        driver = builder.driver
        status = docker.info().driver_status or [] if driver == "docker" else []
    except DockerException as exc:  # the builder (or its daemon) is not there: exit 4, naming it
        said = next((line.strip() for line in (exc.stderr or "").splitlines() if line.strip()), "")
        raise Missing(f"{choice.label} does not answer{': ' + said[:200] if said else ''}; check it with "
                      f"`{' '.join(choice.inspect_argv())}` (no buildx? `make provision`, or install docker-buildx)"
                      ) from None
    where = f" on Docker context {choice.name}" if choice.context else ""
    endpoints = [node.endpoint or "" for node in builder.nodes or []]
    if choice.context:  # the docker driver's node names the context it runs on (or says "default")
        endpoints = [choice.name if e in ("", "default") else e for e in endpoints]
    local = bool(endpoints) and all(endpoint_is_local(e) for e in endpoints)
    return BuilderInfo(supports_registry_cache(driver, status), f"builder {builder.name} (driver {driver}){where}",
                       driver, parse_version(docker.buildx.version()), local)


def builder_key(environ=None, choice: BuilderChoice = BuilderChoice()) -> str:
    """Who answers a capability question: the builder the run chose (a context or an instance), else the
    Docker endpoint and buildx builder chosen by the environment; and the buildx plugin itself (a new
    buildx may answer otherwise)."""
    environ = os.environ if environ is None else environ
    plugin = ""
    for d in (environ.get("DOCKER_CONFIG", os.path.expanduser("~/.docker")) + "/cli-plugins",
              "/usr/libexec/docker/cli-plugins", "/usr/lib/docker/cli-plugins"):
        candidate = os.path.join(d, "docker-buildx")
        if os.path.exists(candidate):
            st = os.stat(candidate)
            plugin = f"{os.path.realpath(candidate)}:{st.st_size}:{st.st_mtime_ns}"
            break
    where = [environ.get("DOCKER_HOST", ""), environ.get("DOCKER_CONTEXT", ""), environ.get("BUILDX_BUILDER", "")]
    if choice.context:
        where = [choice.key(), "", ""]  # --context wins over DOCKER_HOST and the current context
    elif choice.name:
        where[2] = choice.key()
    return "|".join([*where, plugin or str(shutil.which("docker", path=environ.get("PATH")))])


def cached_capability(cache_file, probe=probe_builder, environ=None,
                      choice: BuilderChoice = BuilderChoice()) -> BuilderInfo:
    """The probe's answer, kept per builder (three docker CLI calls cost ~0.4 s; the answer rarely changes)."""
    key = builder_key(environ, choice)
    stored = read_json(cache_file) or {}
    known = BuilderInfo.from_json(stored.get(key))
    if known is not None:
        return known
    info = probe()
    stored[key] = info.to_json()
    try:
        write_json_atomic(cache_file, stored)
    except OSError:
        pass
    return info


def plugin_dirs(environ=None) -> list[str]:
    """Where the docker CLI looks for `docker-buildx`, in its order."""
    environ = os.environ if environ is None else environ
    home = environ.get("HOME") or os.path.expanduser("~")
    return [os.path.join(environ.get("DOCKER_CONFIG") or os.path.join(home, ".docker"), "cli-plugins"),
            "/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
            "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins"]


def direct(argv: list[str], docker: str, environ=None) -> list[str]:
    """`docker buildx …` as the plugin itself (`docker-buildx …`, buildx's standalone mode): the docker
    CLI would start, run the plugin once for its metadata, then run it again — ~50 ms per build.
    Only when `docker` is the real CLI (an executable binary, not a wrapper script someone put first on
    PATH, whose behaviour is theirs to keep) and the plugin is where that CLI would find it."""
    if argv[:2] != ["docker", "buildx"]:
        return argv
    try:
        with open(docker, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                return argv
    except OSError:
        return argv
    for d in plugin_dirs(environ):
        plugin = os.path.join(d, "docker-buildx")
        if os.path.isfile(plugin) and os.access(plugin, os.X_OK):
            return [plugin, *argv[2:]]
    return argv
