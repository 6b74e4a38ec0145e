"""`buildplane plan`: every step with its exact argv; touches nothing."""
from __future__ import annotations


from ..plan import make_plan
from ..tools.run import Runner
from ._output import plan_text, print_json
from .up import options


def run(args, topology) -> int:
    topo, _ = topology(args)
    plan = make_plan(topo, options(args), runner=Runner(), persist=False)
    if args.json:
        print_json(plan.to_json())
    else:
        print(plan_text(plan, topo.name))
    return 0
