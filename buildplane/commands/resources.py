"""The Tilt resources derived from the topology, so the Tiltfile never repeats it (DESIGN §4 `resources --json`)."""
from __future__ import annotations

import json
from pathlib import Path

from ..topology import Topology

# State the product writes must never retrigger Tilt.
ALWAYS_IGNORE = [".buildplane", "output", ".git", ".venv", "**/__pycache__"]


def links(t, namespace: str) -> list[str]:
    """A target's public routes in dev (its smoke URLs and browser page), for the Tilt UI to show."""
    urls = [r.url for r in t.smoke_for("dev", namespace)] + ([b.url] if (b := t.browser_for("dev", namespace)) else [])
    return list(dict.fromkeys(urls))


def tilt_resources(topo: Topology, topology_file: Path | str) -> dict:
    resources = []
    for name, t in topo.targets.items():
        deps = [t.context, t.dockerfile] + ([t.chart] if t.chart else []) + list(t.all_values())
        resources.append({
            "name": name,
            "args": ["up", "--mode", "dev", name],
            "deps": list(dict.fromkeys(deps)),
            "ignore": ALWAYS_IGNORE,
            "labels": ["optional"] if t.optional else ["app"],
            "optional": t.optional,
            "flag": name if t.optional else None,
            "trigger": "auto",
            "auto_init": True,
            "builds": True,  # takes --remote-cache (Tilt's --remote_cache flag)
            "links": links(t, topo.modes.dev.namespace),
        })
    for name, t in topo.targets.items():  # Tilt's trigger of an app is "update now": fresh is a no-op, so a button
        resources.append({"name": f"{name}-force", "args": ["up", "--mode", "dev", name, "--force"], "deps": [],
                          "ignore": [], "labels": ["force"], "optional": t.optional, "flag": name if t.optional else None,
                          "trigger": "manual", "auto_init": False, "builds": True})
    for name, t in topo.targets.items():
        if t.browser:
            resources.append({
                "name": f"{name}-e2e-smoke", "args": ["smoke", "--browser", name], "deps": [],
                "ignore": [], "labels": ["smoke"], "optional": True, "flag": "e2e", "trigger": "manual",
                # runs once after its app when started with --e2e (so `tilt ci -- --e2e` includes it), then on demand
                "auto_init": True, "resource_deps": [name],
            })
    if any(t.chart for t in topo.targets.values()):  # read-only diagnostics, run on demand from the Tilt UI
        resources.append({"name": "logs", "args": ["logs", "--tail", "200"], "deps": [], "ignore": [],
                          "labels": ["diagnostics"], "optional": False, "flag": None, "trigger": "manual",
                          "auto_init": False})
        resources.append({"name": "status-pods", "args": ["status", "--pods"], "deps": [], "ignore": [],
                          "labels": ["diagnostics"], "optional": False, "flag": None, "trigger": "manual",
                          "auto_init": False})
    if topo.modes.staging is not None:
        resources.append({"name": "staging-mode", "args": ["up", "--mode", "staging", "--build-only"], "deps": [],
                          "ignore": [], "labels": ["mode"], "optional": False, "flag": None, "trigger": "manual",
                          "auto_init": False, "builds": True})
    if topo.modes.deploy is not None:
        resources.append({"name": "deploy-mode", "args": ["handback"], "deps": [], "ignore": [], "labels": ["mode"],
                          "optional": False, "flag": None, "trigger": "manual", "auto_init": False})
    return {"topology": str(topology_file), "resources": resources}


def run(args, topology) -> int:
    topo, path = topology(args)
    print(json.dumps(tilt_resources(topo, path), indent=2))
    return 0
