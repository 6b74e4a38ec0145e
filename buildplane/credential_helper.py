"""`docker-credential-buildplane-env`: the credential store of the Docker config buildx gets where the
topology names registry tokens (tools/docker_config.py). `get` answers a host from its token variable,
else from the user's own Docker config; it stores and erases nothing."""
from __future__ import annotations

import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    action = (argv if argv is not None else sys.argv[1:])[:1]
    if action == ["list"]:
        print("{}")
        return 0
    if action != ["get"]:
        return 0  # store / erase: buildplane's config keeps nothing
    host = sys.stdin.read().strip()
    host = host.removeprefix("https://").removeprefix("http://").rstrip("/")
    from .tools.docker_config import ORIGINAL_VAR, TOKENS_VAR
    from .tools.registry_auth import credentials_for
    try:
        tokens = {h: tuple(v) for h, v in json.loads(os.environ.get(TOKENS_VAR) or "{}").items()}
    except ValueError:
        tokens = {}
    own = {**os.environ, "DOCKER_CONFIG": os.environ.get(ORIGINAL_VAR, "")}
    if not own["DOCKER_CONFIG"]:
        own.pop("DOCKER_CONFIG")
    try:
        found = credentials_for(host, own, tokens=tokens)
    except Exception:  # noqa: BLE001 - a helper answers "not found", never a traceback into buildx's log
        found = None
    if not found:
        print("credentials not found in native keychain")  # the store protocol's own "none"
        return 1
    json.dump({"ServerURL": host, "Username": found[0], "Secret": found[1]}, sys.stdout)
    return 0


def entry() -> None:
    sys.exit(main())
