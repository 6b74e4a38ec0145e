"""Which buildx builder a run builds on, and how every buildx call reaches it (#17).

The choice is `--builder`, else `$BUILDPLANE_BUILDER`, else the topology's `builder.name`, else the
environment's own (buildx's current builder, `DOCKER_HOST`/`DOCKER_CONTEXT`, `BUILDX_BUILDER`). A name is
either a Docker context — a remote daemon, reached as `docker --context NAME buildx …`, since buildx
refuses `--builder` for another context's docker-driver builder — or a buildx builder instance (a remote
BuildKit, the Kubernetes driver, a docker-container or cloud builder), reached with `--builder NAME`.
Which one is read from the Docker CLI's context store (no process). Every build, push, cache export,
capability probe and reachability check of a run goes through the same prefix, so they all talk to one
builder.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

BUILDER_ENV = "BUILDPLANE_BUILDER"
# buildx's words when the builder itself is not there (not a registry or a Dockerfile failing).
_UNREACHABLE = re.compile(r"(Cannot connect to the Docker daemon[^\n]*|no builder \"[^\"]+\" found)")
LOCAL_SCHEMES = ("unix://", "npipe://")  # a daemon or BuildKit on this machine
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a buildx builder or Docker context name


@dataclass(frozen=True)
class BuilderChoice:
    name: str | None = None  # None: the environment's own builder
    context: bool = False  # `name` is a Docker context (docker --context NAME buildx …)
    source: str = "the environment"
    max_parallel: int | None = None  # builds at once on this builder (None: as many as the run has)

    def docker(self) -> list[str]:
        """`docker`, pointed at the builder's context when it is one."""
        return ["docker", "--context", self.name] if self.context and self.name else ["docker"]

    def buildx(self, verb: str) -> list[str]:
        """`docker buildx VERB`, on this builder."""
        argv = [*self.docker(), "buildx", verb]
        if self.name and not self.context:
            argv += ["--builder", self.name]
        return argv

    def inspect_argv(self) -> list[str]:
        """The reachability check: buildx inspects (and starts) the builder."""
        argv = [*self.docker(), "buildx", "inspect", "--bootstrap"]
        return argv + [self.name] if self.name and not self.context else argv

    def key(self) -> str:
        """What tells builders apart in the capability cache."""
        return f"{'context' if self.context else 'builder'}:{self.name or ''}"

    @property
    def label(self) -> str:
        if not self.name:
            return "the environment's builder"
        return f"Docker context {self.name}" if self.context else f"buildx builder {self.name}"

    def sentence(self) -> str:
        limit = f", at most {self.max_parallel} build(s) at once" if self.max_parallel else ""
        return f"builds on {self.label} (from {self.source}){limit}"


def context_store(environ=None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("DOCKER_CONFIG") or str(Path(environ.get("HOME") or Path.home()) / ".docker")
    return Path(base) / "contexts" / "meta"


def _context_meta(name: str, environ=None) -> Path:
    """Where the Docker CLI keeps a context: `meta/<sha256 of the name>/meta.json`."""
    return context_store(environ) / hashlib.sha256(name.encode()).hexdigest() / "meta.json"


def is_docker_context(name: str, environ=None) -> bool:
    """A context the Docker CLI knows."""
    if name == "default":
        return False  # the built-in context: the environment's own daemon
    return _context_meta(name, environ).is_file()


def context_host(name: str, environ=None) -> str | None:
    """The Docker endpoint a context names (`Endpoints.docker.Host` in its meta.json), or None."""
    try:
        meta = json.loads(_context_meta(name, environ).read_text())
        host = meta["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return host if isinstance(host, str) else None


def endpoint_is_local(endpoint: str, environ=None) -> bool:
    """Whether a buildx node's endpoint is on this machine: a unix socket or named pipe, or a Docker
    context (the environment's own: `DOCKER_HOST`, else the local daemon) whose daemon is one. tcp://,
    ssh://, kubernetes and cloud endpoints are not."""
    environ = os.environ if environ is None else environ
    if "://" in endpoint:
        return endpoint.startswith(LOCAL_SCHEMES)
    if endpoint in ("", "default"):
        host = environ.get("DOCKER_HOST", "")
        return not host or host.startswith(LOCAL_SCHEMES)
    host = context_host(endpoint, environ)
    return host is not None and host.startswith(LOCAL_SCHEMES)


def choose(topo, flag: str | None, environ=None) -> BuilderChoice:
    """--builder, else $BUILDPLANE_BUILDER, else builder.name in the topology, else the environment's."""
    environ = os.environ if environ is None else environ
    limit = topo.builder.max_parallel
    if flag:
        name, source = flag, "--builder"
    elif environ.get(BUILDER_ENV):
        name, source = environ[BUILDER_ENV], f"${BUILDER_ENV}"
    elif topo.builder.name:
        name, source = topo.builder.name, f"builder.name in {topo.source}"
    else:
        return BuilderChoice(max_parallel=limit)
    if not NAME.match(name):
        from ..errors import BadInput
        raise BadInput(f"{source} {name!r}: not a builder or Docker context name (letters, digits, '_', '.', '-')")
    if name == "default":
        return BuilderChoice(None, False, source, limit)
    return BuilderChoice(name, is_docker_context(name, environ), source, limit)


def inspect_problem(output: str) -> str | None:
    """What `buildx inspect --bootstrap` says is wrong with the builder, or None when a node runs. It exits 0
    for a context whose daemon is gone, printing `Error: Cannot connect …`: the output decides, not the code."""
    lines = [line.strip() for line in output.splitlines()]
    for line in lines:
        if line.startswith(("Error:", "ERROR:")):
            return line.split(":", 1)[1].strip() or "buildx reports an error"
    statuses = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Status:")]
    if not statuses:
        return "buildx reports no node for it"
    if "running" not in statuses:
        return f"its nodes are {', '.join(statuses)}"
    return None


def unreachable(lines: list[str]) -> str | None:
    """The line of a failed buildx call that says its builder is not there, or None."""
    for line in reversed(lines):
        m = _UNREACHABLE.search(line)
        if m:
            return m.group(1).strip()
    return None
