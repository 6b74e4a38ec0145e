"""The buildx command line of a build step: the build itself, its background cache export, and how its
image leaves the builder. A mixin of `steps/build.py`'s BuildStep, whose fields it reads; apart, so the
step's module keeps to running the build. The argv is written in python-on-whales' order (tested for
parity in tests/test_build_boundary.py)."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from ..guards import DIGEST
from ..topology.yaml_lines import expand_env, has_env


LAYOUT_MAX_LAYER = 32 << 20  # bytes; where the layout's copy costs what it saves (bench/monorepo.py)


def largest_layer(manifest: tuple[bytes, str] | None) -> int | None:
    """The largest layer's size in a pushed image manifest (bytes, media type)."""
    if manifest is None:
        return None
    try:
        layers = json.loads(manifest[0]).get("layers") or []
        return max((int(layer.get("size") or 0) for layer in layers), default=0)
    except (ValueError, AttributeError, TypeError):
        return None


def _host(ref: str) -> str:
    return ref.split("/", 1)[0]


class BuildxArgv:
    def _insecure(self, ref: str) -> str:
        """`,registry.insecure=true` for a registry the topology lists in plain_http, off loopback: BuildKit
        allows plain HTTP on loopback by itself and nowhere else, so a plain-HTTP Nexus needs it said."""
        return ",registry.insecure=true" if _host(ref) in self.insecure else ""

    def cache_from_arg(self, inline_from: str | None = None) -> str | None:
        """Registry cache import; with inline cache, the image it travels in (the last one pushed)."""
        if not self.cache_from:
            return None
        ref = inline_from or self.cache_from
        return f"type=registry,ref={ref}{self._insecure(ref)}"

    def cache_to_arg(self, inline: bool = False) -> str | None:
        if not self.cache_to:
            return None
        return "type=inline" if inline else f"type=registry,ref={self.cache_to},mode=max{self._insecure(self.cache_to)}"

    def push_way(self, info, record: dict | None = None) -> str:
        """How this image leaves the builder (`BuilderInfo.push`), but never as a layout when that would
        hold more than one image manifest (several platforms, or an attestation beside the image), nor when
        the last image had a layer past LAYOUT_MAX_LAYER: the layout is one more copy of every new layer
        (buildx writes it to disk before buildplane sends it), which outweighs its saved round trips."""
        way = info.push
        large = int((record or {}).get("largest_layer") or 0) > LAYOUT_MAX_LAYER
        if way == "layout" and (self.layout is None or self.provenance is not False or large
                                or (self.platform and "," in self.platform)):
            return replace(info, local=False).push
        return way

    @property
    def exports_in_background(self) -> bool:
        return bool(self.cache_to) and self.export == "background"

    @property
    def base_contexts(self) -> dict[str, str]:
        """Each external FROM pinned to the digest the inputs hold for it (`--build-context NAME=docker-image://
        NAME@DIGEST`): the image built is the one the inputs digest names, even if the tag moves meanwhile,
        and BuildKit reads its config from its own store instead of asking the registry (a round trip
        or two, on every build)."""
        return {image: f"docker-image://{image}@{digest}" for image, digest in self.inputs.bases.items()
                if "@" not in image and DIGEST.match(str(digest))}

    def _head(self, provenance: bool | None) -> list[str]:
        argv = [*self.builder.buildx("build"), "--progress", "plain"]
        for k, v in self.build_args.items():
            # A value from ${VAR} goes through buildx's environment (`--build-arg NAME`): never in argv or `ps`.
            argv += ["--build-arg", k if has_env(v) else f"{k}={v}"]
        for name, source in self.base_contexts.items():
            argv += ["--build-context", f"{name}={source}"]
        if provenance is False:
            argv.append("--provenance=false")
        return argv

    def _tail(self) -> list[str]:
        argv = []
        if self.platform:
            argv += ["--platform", self.platform]
        if self.network:
            argv += ["--network", self.network]
        return argv

    def argv(self, inline_cache: bool = False, inline_from: str | None = None, push: str = "buildx") -> list[str]:
        """`docker buildx build …` in the same order python-on-whales writes it (tested for parity)."""
        argv = self._head(self.provenance)
        if self.pull:
            argv.append("--pull")
        if push == "layout":
            argv += ["--output", f"type=oci,dest={self.layout},tar=false"]
        elif push == "buildx" and self._insecure(self.repo):  # --push, said with the registry's plain HTTP
            argv += ["--output", f"type=registry{self._insecure(self.repo)}"]
        else:
            argv.append("--push" if push == "buildx" else "--load")  # docker-push: into the image store first
        argv += ["--metadata-file", str(self.metadata_file), "--file", str(self.dockerfile)]
        if self.build_target:
            argv += ["--target", self.build_target]
        cf = self.cache_from_arg(inline_from if inline_cache else None)
        if inline_cache and not inline_from:
            cf = None  # inline cache with no earlier image: nothing to import
        ct = self.cache_to_arg(inline_cache) if inline_cache or not self.exports_in_background else None
        if cf:
            argv += ["--cache-from", cf]
        if ct:
            argv += ["--cache-to", ct]
        # One tag leaves the builder; the content tag goes, so a run cut short after the push is still fresh.
        argv += [*self._tail(), "--tag", self.content_ref, str(self.context)]
        return argv

    def export_argv(self) -> list[str]:
        """The background cache export: the same build (all of it in the builder's cache by now), with
        only the registry cache as output — no image, no import, no attestation."""
        argv = self._head(False) + ["--file", str(self.dockerfile)]
        if self.build_target:
            argv += ["--target", self.build_target]
        argv += ["--cache-to", self.cache_to_arg(), "--output", "type=cacheonly"]
        return argv + self._tail() + [str(self.context)]

    def build_env(self, state_root: Path | None = None) -> dict[str, str]:
        """The environment buildx gets: ours, plus each ${VAR} build arg under its own name, and a Docker
        config whose helper reads registries.auth's tokens (tools/docker_config.py). buildx's metadata file
        would record the build args as provenance (`build-arg:NPM_TOKEN`) even with --provenance=false;
        buildplane reads only the digest from it, so the provenance is left out."""
        secret = {k: expand_env(v) for k, v in self.build_args.items() if has_env(v)}
        env = {**os.environ, "BUILDX_METADATA_PROVENANCE": "disabled", **secret}
        if self.tokens and state_root is not None:
            from ..tools.docker_config import with_tokens
            env = with_tokens(env, {host: (user, var) for host, user, var in self.tokens}, state_root)
        return env

