"""A Docker config for buildx where the topology names registry tokens (`registries.auth`).

buildx (and BuildKit through it) reads credentials only from `$DOCKER_CONFIG/config.json`. Writing the
token there would put a secret in a file, and argv would show it to `ps`. Instead buildx gets a config
of its own whose credential store is `docker-credential-buildplane-env` (this package's helper): asked
for a host, the helper answers from the token variable buildx inherited, and for every other host from
the user's own config, as buildx would have. The file holds no secret; the user's other settings and
the plugin and builder directories beside it are kept.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..state import write_json_atomic

HELPER = "buildplane-env"
TOKENS_VAR = "BUILDPLANE_REGISTRY_TOKENS"  # host → [username, variable]: names only
ORIGINAL_VAR = "BUILDPLANE_DOCKER_CONFIG"  # the user's own config directory, for the other hosts


def user_config_dir(environ) -> Path:
    return Path(environ.get("DOCKER_CONFIG") or Path(environ.get("HOME") or Path.home()) / ".docker")


def with_tokens(environ: dict[str, str], tokens: dict[str, tuple[str, str]], root: Path) -> dict[str, str]:
    """`environ` for a buildx call: unchanged where no named token variable is set."""
    live = {host: [user, var] for host, (user, var) in tokens.items() if environ.get(var)}
    if not live:
        return environ
    original = Path(environ.get(ORIGINAL_VAR) or user_config_dir(environ))
    try:
        cfg = json.loads((original / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    kept = {k: v for k, v in (cfg if isinstance(cfg, dict) else {}).items()
            if k not in ("auths", "credsStore", "credHelpers")}  # every host goes through the helper
    dest = root / "docker-config"
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    if original.is_dir():
        for item in original.iterdir():  # cli-plugins (buildx itself), buildx (its builders), contexts
            link = dest / item.name
            if item.name == "config.json" or (link.is_symlink() and os.readlink(link) == str(item)):
                continue
            if link.is_symlink():  # a link into another config directory, from an earlier run
                link.unlink()
            if not link.exists():
                link.symlink_to(item)
    write_json_atomic(dest / "config.json", {**kept, "credsStore": HELPER})
    helper_dir = str(Path(sys.executable).parent)  # the package's scripts, beside its interpreter
    return {**environ, "DOCKER_CONFIG": str(dest), ORIGINAL_VAR: str(original), TOKENS_VAR: json.dumps(live),
            "PATH": os.pathsep.join([helper_dir, environ.get("PATH", "")])}
