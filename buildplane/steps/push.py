"""How a built image leaves the builder: the build facts' `push` (README, "Tag placeholders").

- "layout": a builder on this machine writes an OCI layout; buildplane pushes it (tools/layout_push.py):
  new blobs into upload sessions opened while the builder worked, the manifest under the content tag;
  the tag step puts the same bytes under the mode tag while the release runs.
- "buildx": `--push` from the builder itself (a remote builder: its blobs never cross the workstation).
- "docker-push": the image store and one `docker push` (buildx < 0.21 on the docker driver).

A push the registry broke off (5xx, resets) is tried again a bounded number of times, whichever way.
Each function takes the build step (`steps/build.py`'s BuildStep, which calls them) as `step`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import StepFailed
from ..tools import buildx
from .base import RunContext

if TYPE_CHECKING:
    from ..tools.layout_push import Sessions

# A registry 5xx or reset during the push: the push again (with --push, the build again: cached, so only
# the push), then give up.
ATTEMPTS = 3
BACKOFF_S = 1.0
DOCKER_PUSH_TIMEOUT_S = 1800.0
# Upload sessions opened ahead of a layout push in the edit loop: a one-line edit's new blobs are its
# layer and the image config. More new blobs open their own sessions.
SESSIONS = 2


def failed(step, ctx: RunContext, attempt: int, fault, delay: float) -> None:
    """A push the registry broke off: say so and wait before the next attempt; after the last, fail."""
    if attempt == ATTEMPTS:
        raise StepFailed(f"{step.target}: the push to registry {fault.registry} failed {attempt} times, "
                         f"last with {fault.status} ({fault.url}); check the registry's health and logs") from None
    ctx.log(f"{step.target}: registry {fault.registry} answered {fault.status} during the push; "
            f"trying again in {delay:g}s ({attempt}/{ATTEMPTS})")
    ctx.sleep(delay)


def open_sessions(step, ctx: RunContext) -> Sessions | None:
    """Upload sessions for the layout push, opened now, while the builder works; only in the edit loop (the
    layout's last push went to this repository), where the new blobs are few and known to be new."""
    from ..tools import layout_push
    from ..tools.registry import Ref

    ref = Ref.parse(step.content_ref)
    if step.layout is None or not layout_push.pushed_before(step.layout, f"{ref.host}/{ref.repo}"):
        return None
    return layout_push.Sessions(ctx.registry, ref.host, ref.repo, SESSIONS)


def push_layout(step, ctx: RunContext, sessions: Sessions | None, tag: str | None = None) -> tuple[str, tuple[bytes, str]]:
    """The layout buildx wrote, pushed under the content tag, then pruned; its digest and its manifest (bytes,
    media type), which the tag step puts under the mode tag while the release runs. A registry that keeps
    failing (each call is tried again already) gets the whole push again."""
    from ..tools import layout_push
    from ..tools.registry import Ref, RegistryFault

    image = layout_push.read_layout(step.layout, buildx.read_metadata_digest(step.metadata_file))
    layout_push.end_write(step.layout)
    ref = Ref.parse(step.content_ref)
    delay = BACKOFF_S
    for attempt in range(1, ATTEMPTS + 1):
        try:
            digest = layout_push.push(ctx.registry, step.layout, image, ref.host, ref.repo,
                                      [tag or step.content_tag], sessions if attempt == 1 else None)
            break
        except RegistryFault as fault:
            failed(step, ctx, attempt, fault, delay)
            delay *= 2
    layout_push.prune(step.layout, image)
    return digest, (image.manifest, image.media_type)


def begin_layout(step, ctx: RunContext) -> None:
    """Before buildx writes the layout: one a killed build left half-written is removed (tools/layout_push.py)."""
    from ..tools import layout_push

    if layout_push.begin_write(step.layout):
        ctx.log(f"{step.target}: the OCI layout {step.layout} was left half-written by a build that was "
                "stopped; writing it anew")


def end_layout_after_failure(step) -> None:
    from ..tools import layout_push

    layout_push.end_failed_write(step.layout)


def docker_push(step, ctx: RunContext, cancel=None) -> str | None:
    """One `docker push` of the content tag from the image store; the digest it reports."""
    res = ctx.runner.run([*step.builder.docker(), "push", step.content_ref], timeout=DOCKER_PUSH_TIMEOUT_S,
                         cancel=cancel)
    return buildx.pushed_digest(res.stdout) or ctx.registry.manifest_digest(step.content_ref)
