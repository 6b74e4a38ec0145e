"""What a step will do, as data: the exact argv is rendered from these, for `plan` and for running."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .freshness import ImageInputs


@dataclass(frozen=True)
class BuildSpec:
    target: str
    mode: str
    context: Path
    dockerfile: Path
    build_target: str | None
    build_args: dict[str, str]
    platform: str | None
    network: str | None
    repo: str
    tag: str
    content_tag: str
    cache_scope: str
    cache_from: str | None  # the registry ref, when the mode imports
    cache_to: str | None  # the registry ref, when the mode exports
    metadata_file: Path
    inputs: ImageInputs

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def content_ref(self) -> str:
        return f"{self.repo}:{self.content_tag}"

    def cache_from_arg(self, inline_from: str | None = None) -> str | None:
        """Registry cache import; with inline cache, the image it travels in (the last one pushed)."""
        if not self.cache_from:
            return None
        return f"type=registry,ref={inline_from or self.cache_from}"

    def cache_to_arg(self, inline: bool = False) -> str | None:
        if not self.cache_to:
            return None
        if inline:
            return "type=inline"
        return f"type=registry,ref={self.cache_to},mode=max"

    def argv(self, inline_cache: bool = False, inline_from: str | None = None) -> list[str]:
        """`docker buildx build …` in the same order python-on-whales writes it (tested for parity)."""
        argv = ["docker", "buildx", "build", "--progress", "plain"]
        for k, v in self.build_args.items():
            argv += ["--build-arg", f"{k}={v}"]
        argv += ["--push", "--metadata-file", str(self.metadata_file), "--file", str(self.dockerfile)]
        if self.build_target:
            argv += ["--target", self.build_target]
        cf = self.cache_from_arg(inline_from if inline_cache else None)
        if inline_cache and not inline_from:
            cf = None  # inline cache with no earlier image: nothing to import
        ct = self.cache_to_arg(inline_cache)
        if cf:
            argv += ["--cache-from", cf]
        if ct:
            argv += ["--cache-to", ct]
        if self.platform:
            argv += ["--platform", self.platform]
        if self.network:
            argv += ["--network", self.network]
        # One tag leaves the builder: two tags of one manifest pushed at once race on a filesystem-backed
        # registry (HEAD answers 500 while the shared revision link is rewritten). The content tag goes
        # first, so a run cut short after the push is still found fresh; the mode tag is added registry-side.
        argv += ["--tag", self.content_ref, str(self.context)]
        return argv


@dataclass(frozen=True)
class ReleaseSpec:
    target: str
    mode: str
    release: str
    chart: Path
    namespace: str
    kube_context: str | None
    values: tuple[Path, ...]
    repo: str
    timeout: str
    history_max: int
    helm_major: int
    render_only: bool  # no reachable allowed context: helm template, never applied

    def argv(self, digest: str) -> list[str]:
        if self.render_only:
            argv = ["helm", "template", self.release, str(self.chart), "--namespace", self.namespace]
        else:
            argv = ["helm", "upgrade", "--install", self.release, str(self.chart), "--namespace", self.namespace,
                    "--kube-context", str(self.kube_context)]
        for v in self.values:
            argv += ["-f", str(v)]
        argv += ["--set", f"image.repository={self.repo}", "--set", f"image.digest={digest}"]
        if not self.render_only:
            argv += ["--wait", "--timeout", self.timeout, "--history-max", str(self.history_max)]
            # Helm 4 renamed --atomic; both roll back a failed upgrade.
            argv.append("--rollback-on-failure" if self.helm_major >= 4 else "--atomic")
        return argv


@dataclass(frozen=True)
class SmokeSpec:
    target: str
    routes: tuple = field(default_factory=tuple)
    deadline_s: float = 120.0


@dataclass(frozen=True)
class HandbackSpec:
    server: str
    apps: tuple[str, ...]
    timeout_s: float
    prune: bool
    token_env: str = "ARGOCD_AUTH_TOKEN"
    username_env: str | None = None
    password_env: str | None = None
    ca_file: str | None = None
    poll_s: float = 2.0


@dataclass(frozen=True)
class StopTiltSpec:
    record: Path  # where `buildplane tilt up` recorded the process it became

    def action(self) -> str:
        return (f"stop the Tilt process recorded in {self.record} by `buildplane tilt up` "
                "(TERM, then KILL after 10s), if it still runs")
