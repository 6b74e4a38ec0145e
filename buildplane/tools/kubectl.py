"""kubectl is for read-only diagnostics only (DESIGN §1): the verbs that may run, checked by the runner
for every kubectl call, so no caller can mutate the cluster through it."""
from __future__ import annotations

from ..errors import Refused

# kubectl verbs the product may use: read-only diagnostics.
KUBECTL_READ_VERBS = frozenset({"get", "describe", "logs", "version", "top", "explain", "api-resources",
                                "api-versions", "cluster-info", "events", "auth"})
KUBECTL_CONFIG_READ = frozenset({"view", "current-context", "get-contexts", "get-clusters"})
_KUBECTL_VALUE_FLAGS = frozenset({"-n", "--namespace", "--context", "--kubeconfig", "--cluster", "--user", "-l",
                                  "--selector", "-o", "--output", "-c", "--container", "-s", "--server"})


def check_kubectl(argv: list[str]) -> None:
    """Only read-only kubectl verbs may ever run (DESIGN §1)."""
    words, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
        elif a in _KUBECTL_VALUE_FLAGS:
            skip = True  # the next word is this flag's value, not the verb
        elif not a.startswith("-"):
            words.append(a)
    verb = words[0] if words else ""
    if verb in KUBECTL_READ_VERBS:
        return
    if verb == "config" and len(words) > 1 and words[1] in KUBECTL_CONFIG_READ:
        return
    raise Refused("kubectl-read-only", f"kubectl {verb or '(no verb)'} is not allowed: the cluster is changed only through Helm and Argo CD")
