"""`buildplane plan`: every step with its exact argv; touches nothing."""
from __future__ import annotations

import json

from ..plan import make_plan
from ..tools.run import Runner
from ._output import plan_text
from .up import options


def run(args, topology) -> int:
    topo, _ = topology(args)
    plan = make_plan(topo, options(args), runner=Runner())
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print(plan_text(plan, topo.name))
    return 0
