"""Registry credentials: a token from the environment where the topology names one (`registries.auth`),
else the Docker config the builder uses (`$DOCKER_CONFIG/config.json`: `auths`, `credHelpers`,
`credsStore`). They go to the registry and are never printed."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from ..errors import BadInput, BuildplaneError
from .run import Runner


def docker_config_path(environ=None) -> Path:
    environ = os.environ if environ is None else environ
    base = environ.get("DOCKER_CONFIG") or str(Path(environ.get("HOME", str(Path.home()))) / ".docker")
    return Path(base) / "config.json"


def credentials_for(host: str, environ=None, runner: Runner | None = None,
                    tokens: dict[str, tuple[str, str]] | None = None) -> tuple[str, str] | None:
    """(user, secret) for `host`: the topology's token variable when it is set, else from the Docker config
    — inline `auths`, or its credential helper, run through the one process runner (never logged: the
    secret is on its stdout) — or None."""
    environ = os.environ if environ is None else environ
    if tokens and host in tokens and environ.get(tokens[host][1]):
        return tokens[host][0], environ[tokens[host][1]]
    try:
        cfg = json.loads(docker_config_path(environ).read_text())
    except (OSError, ValueError):
        return None
    helper = (cfg.get("credHelpers") or {}).get(host) or cfg.get("credsStore")
    entry = (cfg.get("auths") or {}).get(host) or (cfg.get("auths") or {}).get(f"https://{host}")
    if entry and entry.get("auth"):
        try:
            user, sep, secret = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError, TypeError):
            sep = ""
        if not sep:
            raise BadInput(f"{docker_config_path(environ)}: auths.{host}.auth is not base64 of `user:password`; "
                           f"run `docker login {host}` again")
        return user, secret
    if helper:
        try:
            out = (runner or Runner()).run([f"docker-credential-{helper}", "get"], stdin=host, timeout=10).stdout
            data = json.loads(out)
            return data.get("Username", ""), data.get("Secret", "")
        except (BuildplaneError, ValueError):
            return None
    return None
