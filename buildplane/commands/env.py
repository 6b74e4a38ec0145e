"""`buildplane env`: the BuildPlane contract as `export` lines (or JSON)."""
from __future__ import annotations

import json
import sys

from .. import contract


def run(args, topology) -> int:
    topo, path = topology(args)
    env = contract.environment(topo, args.mode, path)
    if args.format == "json":
        print(json.dumps({v.name: v.value for v in env}, indent=2))
    else:
        sys.stdout.write(contract.format_sh(env))
    return 0
