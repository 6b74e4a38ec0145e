"""The product never runs a mutating kubectl verb: every command, as a real process, with a `kubectl` on PATH
that allows only read-only verbs and fails on anything else."""
from __future__ import annotations

import os

import pytest

from conftest import run_process
from fakes import FakeTool

MUTATING = {"apply", "create", "delete", "patch", "replace", "edit", "scale", "set", "label", "annotate", "rollout",
            "expose", "run", "cordon", "drain", "taint"}

COMMANDS = [
    (["env", "--mode", "dev"], {0}),
    (["plan", "--mode", "dev"], {0}),
    (["plan", "--mode", "staging", "--apply", "--json"], {0}),
    (["plan", "--mode", "deploy"], {0}),
    (["up", "--mode", "dev"], {4}),  # the registry does not answer: exit 4, nothing mutated
    (["up", "--mode", "staging", "--apply"], {4}),
    (["status"], {0}),
    (["explain", "ctx/app.txt"], {0}),
    (["resources", "--json"], {0}),
    (["doctor"], {0, 4}),
    (["smoke", "api", "--deadline", "0.2"], {1}),
    (["handback", "--timeout", "1"], {4}),  # no Argo token: exit 4 before any call
    (["events", "stats"], {0}),
]


@pytest.mark.parametrize("argv,codes", COMMANDS, ids=[" ".join(c[0][:2]) for c in COMMANDS])
def test_no_command_mutates_through_kubectl(workspace, tmp_path, argv, codes):
    bin_dir = tmp_path / "bin"
    kubectl = FakeTool(bin_dir, "kubectl")
    for verb in ("get", "version", "config", "auth", "describe"):
        kubectl.expect(verb)
    FakeTool(bin_dir, "helm").expect("version", stdout="v4.1.4\n")
    FakeTool(bin_dir, "docker")
    FakeTool(bin_dir, "tilt").expect("get", "uiresources", exit=1)
    kc = workspace / "kubeconfig"
    kc.write_text("apiVersion: v1\ncurrent-context: lab\ncontexts: [{name: lab, context: {cluster: lab}}]\n")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECONFIG": str(kc), "HOME": str(workspace)}
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith(("ARGOCD_", "OTEL_", "FRACTALOPS_"))}
    res = run_process(["--topology", "topology.yaml", *argv], cwd=workspace, env={**env_clean, **env}, timeout=60)
    assert res.code in codes, res.err
    assert "Traceback" not in res.err
    assert [c for c in kubectl.calls if c and c[0] in MUTATING] == []
    assert kubectl.unexpected() == []
