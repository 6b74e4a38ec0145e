"""Plan: the ordered steps a mode would run for some targets, with their exact argv. No side effects."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import contract, guards
from .errors import BadInput, Missing
from .freshness import STATE_DIR, StatCache, image_inputs
from .kubeconfig import KubeContext, resolve
from .specs import BuildSpec, HandbackSpec, ReleaseSpec, SmokeSpec, StopTiltSpec
from .tools.run import Runner
from .tools import helm as helm_tool
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


REMOTE_CACHE_ENV = "BUILDPLANE_REMOTE_CACHE"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class CacheChoice:
    """Whether a run imports/exports the registry build cache, and who decided it (shown by `plan`)."""

    import_: bool
    export: bool
    source: str

    def sentence(self, mode: str) -> str:
        state = ("import + export" if self.import_ and self.export else "import only" if self.import_
                 else "export only" if self.export else "off")
        how = "" if self.import_ or self.export else (
            f"; turn it on with --remote-cache, {REMOTE_CACHE_ENV}=true or Tilt's --remote_cache")
        return f"registry build cache for {mode}: {state} (from {self.source}){how}"


def cache_choice(topo: Topology, mode: str, opts: Options, environ) -> CacheChoice:
    """--remote-cache, else $BUILDPLANE_REMOTE_CACHE, else the topology's modes.<mode>.cache."""
    setting = topo.mode(mode).cache
    if opts.remote_cache:
        on, source = True, "--remote-cache"
    elif environ.get(REMOTE_CACHE_ENV) is not None:
        raw = environ[REMOTE_CACHE_ENV].strip().lower()
        if raw not in _TRUE + _FALSE:
            raise BadInput(f"${REMOTE_CACHE_ENV}={environ[REMOTE_CACHE_ENV]!r}: valid: true or false")
        on, source = raw in _TRUE, f"${REMOTE_CACHE_ENV}"
    else:
        return CacheChoice(setting.import_, setting.export, f"modes.{mode}.cache in {topo.source}")
    if on and not topo.registries.cache:
        raise BadInput(f"{topo.source}: registries.cache: not set, so {source} has no cache to use; "
                       "add registries.cache")
    return CacheChoice(on, on, source)


@dataclass(frozen=True)
class Step:
    id: str  # "build:runtime"
    kind: str  # build | release | smoke | stop-tilt | handback
    target: str | None
    spec: object
    after: tuple[str, ...] = ()
    note: str = ""

    def describe(self, digest_placeholder: str = "<digest pushed by build>") -> dict:
        """The step as shown by `plan`: its exact argv, or the HTTP calls it makes."""
        out: dict = {"id": self.id, "kind": self.kind, "target": self.target, "after": list(self.after)}
        if isinstance(self.spec, BuildSpec):
            out["argv"] = self.spec.argv()
            out["cache_scope"] = self.spec.cache_scope
            out["inputs_digest"] = self.spec.inputs.digest
            out["fresh_check"] = f"HEAD {self.spec.content_ref} in the final registry; build and push only if missing"
            out["image"] = self.spec.ref
            out["tag"] = f"{self.spec.ref}: added registry-side, a manifest copy of {self.spec.content_ref} (no second push)"
        elif isinstance(self.spec, ReleaseSpec):
            out["argv"] = self.spec.argv(digest_placeholder)
            out["applied"] = not self.spec.render_only
        elif isinstance(self.spec, SmokeSpec):
            out["http"] = [f"GET {r.url} expect {r.status}" + (f" containing {r.text!r}" if r.text else "")
                           for r in self.spec.routes]
        elif isinstance(self.spec, HandbackSpec):
            base = self.spec.server.rstrip("/")
            out["http"] = []
            for app in self.spec.apps:
                out["http"] += [f"GET {base}/api/v1/applications/{app}?refresh=normal",
                                f"POST {base}/api/v1/applications/{app}/sync (only when not Synced+Healthy)"]
        elif isinstance(self.spec, StopTiltSpec):
            out["action"] = self.spec.action()
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Plan:
    mode: str
    targets: list[str]
    steps: list[Step] = field(default_factory=list)
    kube_context: KubeContext | None = None
    namespace: str | None = None
    notes: list[str] = field(default_factory=list)
    revision: str | None = None  # the working tree's commit, for events

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "targets": self.targets,
            "namespace": self.namespace,
            "kube_context": self.kube_context.name if self.kube_context else None,
            "steps": [s.describe() for s in self.steps],
            "notes": self.notes,
        }


def git_sha(runner: Runner, cwd: Path) -> str:
    """Short commit of the working tree, or 'nogit' outside a repository."""
    try:
        res = runner.run(["git", "rev-parse", "--short=12", "HEAD"], timeout=10, cwd=str(cwd), check=False)
    except Missing:  # git missing is not an error for a build
        return "nogit"
    return res.stdout.strip() if res.exit_code == 0 and res.stdout.strip() else "nogit"


def select_targets(topo: Topology, names: tuple[str, ...]) -> list[str]:
    for name in names:
        contract.target(topo, name)
    return list(dict.fromkeys(names)) if names else topo.default_targets()


def target_inputs(topo: Topology, name: str, base: Path, cache: StatCache):
    """(context, dockerfile, build args, ImageInputs) of one target as the working tree stands."""
    t = topo.targets[name]
    context = project_path(base, t.context)
    dockerfile = project_path(base, t.dockerfile)
    args = {**contract.base_image_arg(topo), **t.build_args}
    inputs = image_inputs(context, dockerfile, build_args=args, build_target=t.build_target,
                          platform=t.platform, cache=cache)
    return context, dockerfile, args, inputs


def make_plan(topo: Topology, opts: Options, *, runner: Runner | None = None, base: Path | None = None,
              environ: dict[str, str] | None = None, state_dir: Path | None = None) -> Plan:
    """Build the plan for `opts`, checking every guard first (Refused, exit 3)."""
    runner = runner or Runner()
    base = base or Path.cwd()
    environ = os.environ if environ is None else environ
    if opts.mode == "deploy":
        return _deploy_plan(topo, opts, runner, state_dir or STATE_DIR)
    mode = topo.mode(opts.mode)
    if opts.build_only and opts.apply:
        raise BadInput("--build-only and --apply contradict each other; pick one")
    targets = select_targets(topo, opts.targets)
    plan = Plan(mode=opts.mode, targets=targets, namespace=opts.namespace or mode.namespace)

    releasing = not opts.build_only and releases(opts, mode.release)
    if releasing:
        guards.check_release_namespace(topo, opts.mode, plan.namespace)
        plan.kube_context = resolve(opts.kube_context, environ)
        guards.check_kube_context(topo, plan.kube_context)
    elif opts.mode == "staging" and not opts.build_only:
        plan.notes.append("staging builds only; name a target (or pass --apply) to release it into " + mode.namespace)
    cache_on = cache_choice(topo, opts.mode, opts, environ)
    plan.notes.append(cache_on.sentence(opts.mode))

    state = state_dir or (STATE_DIR if base == Path.cwd() else base / STATE_DIR)
    cache = StatCache.open(state / "statcache.json")
    sha = git_sha(runner, base)
    plan.revision = sha
    helm_major = None
    for name in targets:
        t = topo.targets[name]
        context, dockerfile, args, inputs = target_inputs(topo, name, base, cache)
        tag = contract.render_tag(mode.tag, git_sha=sha, inputs_digest=inputs.digest, mode=opts.mode, target=name)
        guards.check_tag(opts.mode, name, tag)
        cref = contract.cache_ref(topo, opts.mode, name)
        repo = contract.image_repo(topo, name)
        build = BuildSpec(
            target=name, mode=opts.mode, context=context, dockerfile=dockerfile, build_target=t.build_target,
            build_args=args, platform=t.platform, network=topo.builder.network, repo=repo, tag=tag,
            content_tag=contract.content_tag(inputs.digest), cache_scope=contract.cache_scope(opts.mode, name),
            cache_from=cref if cache_on.import_ else None, cache_to=cref if cache_on.export else None,
            metadata_file=state / "builds" / f"{opts.mode}-{name}.json", inputs=inputs,
        )
        plan.steps.append(Step(f"build:{name}", "build", name, build))
        if releasing and t.chart:
            if helm_major is None:
                helm_major = helm_tool.major_version(runner, state / "state" / "helm-version.json") or 4
            ctx = plan.kube_context
            render = not (ctx and ctx.name)
            rel = ReleaseSpec(
                target=name, mode=opts.mode, release=contract.release_name(topo, name), chart=project_path(base, t.chart),
                namespace=plan.namespace, kube_context=ctx.name if ctx else None,
                values=tuple(project_path(base, v) for v in t.values_for(opts.mode)), repo=repo, timeout=mode.helm_timeout,
                history_max=mode.history_max, helm_major=helm_major, render_only=render,
            )
            note = "no allowed kube context is reachable: rendered with helm template, not applied" if render else (
                "" if ctx.known else f"kube context {ctx.name!r} is not in your kubeconfig: helm will fail to reach it")
            plan.steps.append(Step(f"release:{name}", "release", name, rel, after=(f"build:{name}",), note=note))
            if t.smoke and not render:
                plan.steps.append(Step(f"smoke:{name}", "smoke", name,
                                       SmokeSpec(name, t.smoke, mode.smoke_deadline_s), after=(f"release:{name}",)))
    cache.save()
    return plan


def releases(opts: Options, dev_release: bool) -> bool:
    """Dev releases as its topology says; staging only on request: --apply, or naming the targets
    (`make staging-mode TILT_ARGS=runtime` is the explicit ask for a live check of runtime)."""
    if opts.mode == "staging":
        return opts.apply or bool(opts.targets)
    return dev_release


def _deploy_plan(topo: Topology, opts: Options, runner: Runner, state_dir: Path) -> Plan:
    if topo.modes.deploy is None:
        raise BadInput(f"{topo.source}: modes.deploy: not defined; add modes.deploy.argo with server and apps")
    if opts.targets or opts.build_only or opts.apply:
        raise BadInput("deploy mode takes no targets, --build-only or --apply: it hands every canonical app back to Argo CD")
    argo = topo.modes.deploy.argo
    plan = Plan(mode="deploy", targets=list(argo.apps), namespace=topo.modes.deploy.namespace,
                revision=git_sha(runner, Path.cwd()))
    plan.steps.append(Step("stop-tilt", "stop-tilt", None, StopTiltSpec(state_dir / "tilt.json")))
    plan.steps.append(Step("handback", "handback", None, HandbackSpec(
        argo.server, argo.apps, opts.timeout_s or argo.timeout_s, argo.prune, argo.token_env, argo.username_env,
        argo.password_env, argo.ca_file, argo.poll_s), after=("stop-tilt",)))
    return plan


def project_path(base: Path, p: str) -> Path:
    # Keep paths as the user wrote them when we run where they are relative to (plan output stays readable).
    path = Path(p)
    if path.is_absolute() or base == Path.cwd():
        return path
    return base / path
