"""A topology that validated before is built without validating again (topology/construct.py): it must be
the very model validation gives, for every key the schema has — and a changed model validates anew."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from buildplane.topology import load
from buildplane.topology.construct import construct
from buildplane.topology.model import Topology
from buildplane.topology.yaml_lines import load_document
from conftest import BASE_TOPOLOGY, ROOT

RICH = BASE_TOPOLOGY.replace("  service_name: demo-buildplane", "  service_name: demo-buildplane\nbuilder: {network: host, "
                             "name: pool, max_parallel: 2}").replace(
    "    smoke: [{url", "    sync: [{src: app.txt, dest: /app.txt}]\n    build_args: {A: b}\n"
                       "    mode_values: {staging: [chart/values-dev.yaml]}\n    cluster_scoped: [ClusterRole]\n    smoke: [{url")


@pytest.mark.parametrize("source", ["base", "rich", "local", "lxc-pve-lab"])
def test_construct_gives_what_validation_gives(workspace, source, monkeypatch):
    monkeypatch.setenv("ARGOCD_AUTH_TOKEN", "x")
    path = {"base": None, "rich": None, "local": ROOT / "ops/infra/topology/local.yaml",
            "lxc-pve-lab": ROOT / "ops/infra/topology/lxc-pve-lab.yaml"}[source]
    if path is None:
        path = Path("topology.yaml")
        path.write_text(BASE_TOPOLOGY if source == "base" else RICH)
    doc = load_document(path)
    payload = json.dumps({**doc.data, "source": str(path)}, default=str)
    validated = Topology.model_validate_json(payload)
    built = construct(Topology, json.loads(payload))
    assert built == validated and built.model_dump() == validated.model_dump()
    assert repr(built) == repr(validated)  # the same types all the way down (tuples, floats, nested models)


def test_the_second_load_validates_nothing_and_a_changed_model_validates_again(workspace):
    Path("topology.yaml").write_text(RICH)
    first = load("topology.yaml")
    probe = ("import sys; from buildplane.topology import load; t = load('topology.yaml'); "
             "print('importlib.metadata' in sys.modules, t.targets['api'].sync[0].dest)")
    hit = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ, check=True)
    assert hit.stdout.split() == ["False", "/app.txt"]  # built, not validated: no validator, no plugin metadata
    kept = list((Path(os.environ["HOME"]) / ".cache/buildplane/topology").glob("*.valid"))
    assert len(kept) == 1
    kept[0].write_text("another model")  # as after an upgrade of the model or of pydantic
    again = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ, check=True)
    assert again.stdout.split() == ["True", "/app.txt"] and first.targets["api"].sync[0].dest == "/app.txt"


def test_an_edited_cache_entry_neither_changes_the_topology_nor_skips_its_validation(workspace):
    """The parse cache is sealed to the file's bytes: an entry edited to move the dev namespace into the
    protected one, or to carry a value validation refuses, is parsed again from the file."""
    Path("topology.yaml").write_text(BASE_TOPOLOGY)
    load("topology.yaml")
    load("topology.yaml")  # the second load is the one built from the cache
    cache = Path(os.environ["HOME"]) / ".cache/buildplane/topology"
    (entry,) = [p for p in cache.glob("*.json")]
    kept = json.loads(entry.read_text())
    body = json.loads(kept["body"])
    body["data"]["modes"]["dev"]["namespace"] = "prod"  # the protected namespace
    body["data"]["modes"]["dev"]["history_max"] = 0  # validation refuses it
    kept["body"] = json.dumps(body)
    entry.write_text(json.dumps(kept))
    probe = ("from buildplane.topology import load; t = load('topology.yaml'); "
             "print(t.modes.dev.namespace, t.modes.dev.history_max)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ, check=True)
    assert out.stdout.split() == ["demo-dev", "10"]
