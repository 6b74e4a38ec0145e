"""`buildplane handback` (deploy mode): stop the recorded Tilt, hand every canonical app back to Argo CD,
wait until each is Synced and Healthy. Argo CD's API is the only way this touches the cluster."""
from __future__ import annotations

import sys

from ..plan import Options, handback_plan
from ..state import StateDir
from ..tools.argocd import ArgoClient
from ..tools.run import Runner
from ._output import handback_lines
from ._run import context, run_plan, say_failure, start_reporter


def run(args, topology) -> int:
    topo, _ = topology(args)
    state = StateDir.from_env()
    state.check_writable()
    plan = handback_plan(topo, Options(mode="deploy", timeout_s=args.timeout), runner=Runner(), state=state)
    argo = topo.modes.deploy.argo
    client = ArgoClient(argo.server, token_env=argo.token_env, username_env=argo.username_env,
                        password_env=argo.password_env, ca_file=argo.ca_file)
    reporter = start_reporter(topo.telemetry.service_name, state)
    try:
        outcome = run_plan(plan, context(state, argo=client), reporter, as_json=args.json)
    finally:
        client.close()
    for line in handback_lines(outcome.doc):
        print(line, file=sys.stderr if args.json else sys.stdout)
    say_failure(outcome, "handback failed: ")
    return outcome.code
