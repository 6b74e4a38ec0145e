"""Plan: the steps a command would run, with their exact argv or HTTP calls. No side effects.

Every command that runs anything is a plan for the one engine: `up` (build → release → smoke per
target), `smoke` (route or browser smoke per target) and `handback` (stop Tilt → one Argo CD
handback per app). Guards are checked here, before any tool runs (Refused, exit 3).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import contract, guards
from .cache_choice import CacheChoice, cache_plan
from .errors import BadInput
from .freshness import StatCache, target_inputs
from .freshness.bases import BaseDigests
from .freshness.worktree import TreeMemo
from .kubecontext import KubeContext, resolve
from .state import StateDir
from .steps.base import Step
from .steps.build import BuildStep
from .steps.builder_check import BuilderCheckStep
from .steps.cache_export import CacheExportStep
from .steps.tag import TagStep
from .steps.release import ReleaseStep
from .steps.render import RenderStep
from .steps.smoke import SmokeStep
from .tools import helm as helm_tool
from .tools.builders import BuilderChoice, choose as choose_builder
from .tools.git import git_sha
from .tools.run import Runner
from .topology.yaml_lines import has_env
from .topology import Topology



@dataclass(frozen=True)
class Options:
    mode: str
    targets: tuple[str, ...] = ()
    build_only: bool = False
    apply: bool = False
    force: bool = False
    kube_context: str | None = None
    namespace: str | None = None
    timeout_s: float | None = None  # deploy: overrides modes.deploy.argo.timeout_s
    remote_cache: bool = False  # --remote-cache: import and export the registry build cache this run
    pull: bool = False  # --pull: resolve base images now (not from the last 10 minutes' answer) and pull them
    wait_cache: bool = False  # --wait-cache: export the registry cache inside the build, not in the background
    rebuild: bool = False  # --rebuild: a real build even where a sync rule would take the change
    builder: str | None = None  # --builder: a buildx builder or Docker context (else $BUILDPLANE_BUILDER, topology)


@dataclass
class Plan:
    mode: str
    targets: list[str]
    kind: str = "up"  # up | smoke | handback | restart: which summary the run prints
    steps: list[Step] = field(default_factory=list)
    kube_context: KubeContext | None = None
    namespace: str | None = None
    notes: list[str] = field(default_factory=list)
    revision: str | None = None  # the working tree's commit, for events
    busy: list[str] = field(default_factory=list)  # targets whose build has work (not the no-op path)
    fail_fast: bool = True  # the first failure cancels the rest (up); else every step runs (smoke, handback)

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "targets": self.targets,
            "namespace": self.namespace,
            "kube_context": self.kube_context.name if self.kube_context else None,
            "steps": [describe(s) for s in self.steps],
            "notes": self.notes,
        }


def describe(step: Step) -> dict:
    """The step as `plan` shows it: what it is, what it waits for, its exact argv or HTTP calls."""
    out = {"id": step.id, "kind": step.kind, "target": step.target, "after": list(step.after), **step.describe()}
    if step.note:
        out["note"] = step.note
    return out


def releases(opts: Options, dev_release: bool) -> bool:
    """Dev releases as its topology says; staging only on request: --apply, or naming the targets
    (`make staging-mode TILT_ARGS=runtime` is the explicit ask for a live check of runtime)."""
    if opts.mode == "staging":
        return opts.apply or bool(opts.targets)
    return dev_release


# ---- up -------------------------------------------------------------------------------------------

def make_plan(topo: Topology, opts: Options, *, runner: Runner | None = None, base: Path | None = None,
              environ: dict[str, str] | None = None, state: StateDir | None = None, persist: bool = True) -> Plan:
    """The plan for `up` (or `handback`, for deploy mode), checking every guard first."""
    runner = runner or Runner()
    base = base or Path.cwd()
    environ = os.environ if environ is None else environ
    state = state or StateDir.from_env(environ, None if base == Path.cwd() else base)
    if opts.mode == "deploy":
        return handback_plan(topo, opts, runner=runner, state=state)
    mode = topo.mode(opts.mode)
    if opts.build_only and opts.apply:
        raise BadInput("--build-only and --apply contradict each other; pick one")
    plan = Plan(mode=opts.mode, targets=contract.select_targets(topo, opts.targets),
                namespace=opts.namespace or mode.namespace)
    releasing = not opts.build_only and releases(opts, mode.release)
    if releasing:
        guards.check_release_namespace(topo, opts.mode, plan.namespace)
        plan.kube_context = resolve(opts.kube_context, environ)
        guards.check_kube_context(topo, plan.kube_context)
    elif opts.mode == "staging" and not opts.build_only:
        plan.notes.append("staging builds only; name a target (or pass --apply) to release it into " + mode.namespace)
    cache_on = cache_plan(topo, opts.mode, opts.remote_cache, opts.wait_cache, environ)
    plan.notes.append(cache_on.sentence(opts.mode))
    builder = choose_builder(topo, opts.builder, environ)
    if builder.name or builder.max_parallel:
        plan.notes.append(builder.sentence())
    for name in plan.targets:
        from_env = [k for k, v in topo.targets[name].build_args.items() if has_env(v)]
        if from_env:  # kept out of argv and of buildplane's files, but not out of the image: say so once
            plan.notes.append(f"{name}: build arg{'s' if len(from_env) > 1 else ''} {', '.join(from_env)} "
                              "from the environment: the image's history records a build arg's value in every "
                              "RUN after its ARG (and pushes it); for a secret, use a BuildKit secret "
                              "(`RUN --mount=type=secret`)")
    cache = StatCache.open(state.statcache)
    memo = TreeMemo(state.tree_memo, runner)
    bases = base_digests(topo, state, runner, persist)
    plan.revision = git_sha(runner, base)
    helm_major = None  # asked once per plan, and only when something is released
    check = None
    for name in plan.targets:
        build = _build_step(topo, opts, name, base, cache, cache_on, plan.revision, state, bases, builder, memo)
        # A chosen builder (a shared worker, a BuildKit pool) must answer before a target that may build
        # starts; the workstation's own daemon says at once when it is down.
        busy = build.talks_to_registry(state, opts.force)  # it builds or syncs: a new release will follow
        if busy:
            plan.busy.append(name)
        if builder.name and busy:
            check = check or BuilderCheckStep(choice=builder)
            build = replace(build, after=(check.id,))
        plan.steps += [build, TagStep(name, build, after=(build.id,), lock=name)]
        last = build.id
        if releasing and topo.targets[name].chart:
            helm_major = helm_major or helm_tool.major_version(runner, state.helm_version if persist else None) or 4
            plan.steps += _release_steps(topo, opts, plan, build, base, helm_major, state, render_early=busy)
            last = f"release:{name}"
        if build.cache_to and opts.mode == "dev":  # dev's export runs in the background after the release
            # (or, inline, waits for one an earlier dev run left running); other modes export in the build
            plan.steps.append(CacheExportStep(name, build, topo.telemetry.service_name, plan.revision or "",
                                              after=(last,), lock=name))
    if check is not None:  # listed last; the engine honours `after`, whatever the order
        plan.steps.append(check)
    if persist:  # `plan` touches nothing: its hashing is not kept
        cache.save()
        memo.save()
        bases.save()
    return plan


def base_digests(topo: Topology, state: StateDir, runner: Runner, persist: bool = True) -> BaseDigests:
    """Base image digests from the last answers, asking the registry (one HEAD each) when older than
    the rule allows; the registry client is made only if one is needed."""
    client: list = []

    def lookup(ref: str) -> str | None:
        if not client:
            from .tools.registry import RegistryClient
            client.append(RegistryClient(plain_http=frozenset(topo.registries.plain_http), runner=runner, attempts=1,
                                         tokens=topo.registries.tokens))
        return client[0].manifest_digest(ref)
    return BaseDigests(state.base_digests, lookup, log=runner.log or (lambda m: print(m, file=sys.stderr)))


def _build_step(topo: Topology, opts: Options, name: str, base: Path, cache: StatCache, cache_on: CacheChoice,
                sha: str, state: StateDir, bases: BaseDigests | None = None,
                builder: BuilderChoice = BuilderChoice(), memo: TreeMemo | None = None) -> BuildStep:
    t = topo.targets[name]
    context, dockerfile, args, inputs = target_inputs(topo, name, base, cache, bases, opts.pull,
                                                      provenance=mode_provenance(topo, opts.mode), memo=memo)
    tag = contract.render_tag(topo.mode(opts.mode).tag, git_sha=sha, inputs_digest=inputs.digest, mode=opts.mode,
                              target=name)
    guards.check_tag(opts.mode, name, tag)
    cref = contract.cache_ref(topo, opts.mode, name)
    return BuildStep(
        target=name, mode=opts.mode, context=context, dockerfile=dockerfile, build_target=t.build_target,
        build_args=args, platform=t.platform, network=topo.builder.network, repo=contract.image_repo(topo, name),
        tag=tag, content_tag=contract.content_tag(inputs.digest), cache_scope=contract.cache_scope(opts.mode, name),
        cache_from=cref if cache_on.import_ else None, cache_to=cref if cache_on.export else None,
        metadata_file=state.build_metadata(opts.mode, name), layout=state.image_layout(opts.mode, name),
        inputs=inputs, lock=name, pull=opts.pull,
        export=cache_on.export_when, provenance=mode_provenance(topo, opts.mode),
        sync=sync_spec(topo, opts, name, context, base), rebuild=opts.rebuild, builder=builder,
        insecure=plain_http_off_loopback(topo),
        tokens=tuple((host, user, var) for host, (user, var) in sorted(topo.registries.tokens.items())),
    )


def plain_http_off_loopback(topo: Topology) -> tuple[str, ...]:
    """The topology's plain-HTTP registries that BuildKit would not take as plain HTTP by itself."""
    from .tools.registry import plain_http_host
    return tuple(h for h in topo.registries.plain_http if not plain_http_host(h, ()))


def sync_spec(topo: Topology, opts: Options, name: str, context: Path, base: Path):
    """The target's sync rules, in dev only (a synced image never stands in for a built one elsewhere),
    and not with --rebuild or --force."""
    if opts.mode != "dev" or opts.rebuild or opts.force or not topo.targets[name].sync:
        return None
    from .steps.sync import SyncSpec
    from .topology.sync_rules import RuleError, for_target
    try:
        return SyncSpec(tuple(for_target(topo, name, base)), context)
    except RuleError as exc:  # the Dockerfile changed since the topology was loaded
        raise BadInput(f"{topo.source}: targets.{name}.sync[{exc.index}].{exc.key}: {exc.message}") from None


def mode_provenance(topo: Topology, mode: str) -> bool | None:
    """`modes.<mode>.provenance`, else: none in dev (one manifest less to push per edit), buildx's default
    (a provenance attestation) elsewhere. None: buildx decides."""
    setting = topo.mode(mode).provenance
    if setting is None:
        return False if mode == "dev" else None
    return None if setting else False


def _release_steps(topo: Topology, opts: Options, plan: Plan, build: BuildStep, base: Path,
                   helm_major: int, state: StateDir, render_early: bool = False) -> list[Step]:
    """The release of one target, and its route smoke when it is really applied."""
    name, t, mode = build.target, topo.targets[build.target], topo.mode(opts.mode)
    ctx = plan.kube_context
    render = not (ctx and ctx.name)
    note = "no allowed kube context is reachable: rendered with helm template, not applied" if render else (
        "" if ctx.known else f"kube context {ctx.name!r} is not in your kubeconfig: helm will fail to reach it")
    release = ReleaseStep(
        target=name, mode=opts.mode, release=contract.release_name(topo, name),
        chart=contract.project_path(base, t.chart), namespace=plan.namespace, kube_context=ctx.name if ctx else None,
        values=tuple(contract.project_path(base, v) for v in t.values_for(opts.mode)), repo=build.repo,
        timeout=mode.helm_timeout, history_max=mode.history_max,
        helm_major=helm_major, render_only=render, image=build.inputs, state=state, cluster_scoped=t.cluster_scoped,
        after=(build.id, f"render:{name}") if render_early else (build.id,), lock=name, note=note,
        render_id=f"render:{name}" if render_early else None)
    # The build has work, so the release will be new: its render runs beside the build (steps/render.py).
    steps: list[Step] = [RenderStep(name, release, lock=name)] if render_early else []
    steps.append(release)
    routes = t.smoke_for(opts.mode, plan.namespace)
    if routes and not render:
        steps.append(SmokeStep(name, routes, mode.smoke_deadline_s, after=(release.id,), lock=name))
    return steps


# ---- smoke and handback ---------------------------------------------------------------------------

def smoke_targets(topo: Topology, names: tuple[str, ...], browser: bool, mode: str = "dev") -> list[str]:
    namespace = contract.namespace(topo, mode) or ""
    has = (lambda t: t.browser_for(mode, namespace) is not None) if browser else (
        lambda t: bool(t.smoke_for(mode, namespace)))
    if names:
        chosen = contract.select_targets(topo, names)
        lacking = [n for n in chosen if not has(topo.targets[n])]
        if lacking:
            what = "browser" if browser else "smoke"
            raise BadInput(f"{topo.source}: targets.{lacking[0]}.{what}: none for mode {mode}; "
                           f"targets with it: {', '.join(n for n, t in topo.targets.items() if has(t)) or 'none'}")
        return chosen
    chosen = [n for n, t in topo.targets.items() if has(t) and (browser or not t.optional)]
    if not chosen:
        raise BadInput(f"{topo.source}: no target has {'a browser check' if browser else 'smoke routes'} "
                       f"for mode {mode}")
    return chosen


def smoke_plan(topo: Topology, names: tuple[str, ...], *, browser: bool, deadline_s: float,
               mode: str = "dev") -> Plan:
    """Route smoke of each target in parallel; or the browser smoke of each (one Chromium at a time): the
    routes and pages of `mode`."""
    targets = smoke_targets(topo, names, browser, mode)
    namespace = contract.namespace(topo, mode) or ""
    plan = Plan(mode=mode, targets=targets, kind="smoke", fail_fast=False)
    if browser:
        from .steps.browser import BrowserStep, find_chromium, require_playwright  # the browser smoke's alone

        chromium = find_chromium()  # exit 4 before anything runs
        require_playwright()
        for name in targets:
            b = topo.targets[name].browser_for(mode, namespace)
            plan.steps.append(BrowserStep(name, b.url, b.selector, deadline_s, chromium))
        return plan
    plan.steps += [SmokeStep(name, topo.targets[name].smoke_for(mode, namespace), deadline_s) for name in targets]
    return plan


def handback_plan(topo: Topology, opts: Options, *, runner: Runner, state: StateDir) -> Plan:
    """Stop the recorded Tilt, then hand every canonical app back to Argo CD, in parallel."""
    if topo.modes.deploy is None:
        raise BadInput(f"{topo.source}: modes.deploy: not defined; add modes.deploy.argo with server and apps")
    if opts.targets or opts.build_only or opts.apply:
        raise BadInput("deploy mode takes no targets, --build-only or --apply: it hands every canonical app back to Argo CD")
    argo = topo.modes.deploy.argo
    plan = Plan(mode="deploy", targets=list(argo.apps), kind="handback", namespace=topo.modes.deploy.namespace,
                revision=git_sha(runner, Path.cwd()), fail_fast=False)
    from .steps.handback import HandbackStep  # deploy mode's own: the dev loop never loads Argo CD's client
    from .steps.stop_tilt import StopTiltStep

    stop = StopTiltStep(state.tilt)
    dev_tag = contract.dev_tag_regex(topo)
    plan.steps.append(stop)
    plan.steps += [HandbackStep(app, argo.server, opts.timeout_s or argo.timeout_s, argo.prune, argo.poll_s, dev_tag,
                                after=(stop.id,)) for app in argo.apps]
    return plan
