"""`buildplane up`: the pipeline of a mode — what Tilt's local_resource calls (deploy mode: the handback)."""
from __future__ import annotations


from ..plan import Options, make_plan
from ..state import StateDir
from ..steps.base import BuilderCaps
from ..tools import buildx
from ..tools.builders import choose as choose_builder
from ..tools.registry import RegistryClient
from ..tools.run import Runner
from ..freshness import StatCache
from ._output import outcome_lines, stderr
from ._run import context, run_plan, say_failure, start_reporter


def options(args) -> Options:
    return Options(mode=args.mode, targets=tuple(args.targets), build_only=args.build_only, apply=args.apply,
                   force=args.force, kube_context=args.kube_context, namespace=args.namespace,
                   remote_cache=args.remote_cache, pull=args.pull, wait_cache=args.wait_cache,
                   rebuild=args.rebuild, builder=args.builder)


def run(args, topology) -> int:
    if args.mode == "deploy":
        if args.targets or args.build_only or args.apply:
            make_plan(topology(args)[0], options(args))  # raises the one-line BadInput
        args.timeout = None
        from . import handback  # deploy mode's own module: dev's no-op loop never loads it

        return handback.run(args, topology)
    topo, _ = topology(args)
    state = StateDir.from_env()
    state.check_writable()
    reporter = start_reporter(topo.telemetry.service_name, state)
    runner = Runner(ledger=state.children)
    plan = make_plan(topo, options(args), runner=runner, state=state)
    choice = choose_builder(topo, args.builder)
    ctx = context(state, runner=runner, force=args.force,
                  registry=RegistryClient(plain_http=frozenset(topo.registries.plain_http), runner=runner,
                                          challenges=state.registry_challenges, tokens=topo.registries.tokens),
                  builder=BuilderCaps(lambda: buildx.cached_capability(
                      state.builder_caps, lambda: buildx.probe_builder(choice), choice=choice),
                      max_parallel=choice.max_parallel),
                  release_cache=StatCache.open(state.release_statcache),
                  progress=lambda target, line: stderr(f"[{target}] {line}"))  # a RUN may echo a secret
    if plan.busy:  # connect while the engine starts; the no-op path makes no connection at all
        # One per request a build puts in flight at once: the HEAD racing it, then the layout push's
        # config and new layer (tools/layout_push.py); a request finding none idle would connect first.
        ctx.registry.prepare(topo.registries.final.split("/", 1)[0], connections=3)
    outcome = run_plan(plan, ctx, reporter, as_json=args.json)
    if not args.json:
        for line in outcome_lines(outcome.doc, plan.namespace):
            print(line)
    say_failure(outcome)
    return outcome.code
