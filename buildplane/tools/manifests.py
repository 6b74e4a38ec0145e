"""Helm output, parsed apart from running Helm: rendered manifests and `helm status -o json`."""
from __future__ import annotations

import json
import re

from ..errors import StepFailed

_SOURCE = re.compile(r"^# Source: (.+)$", re.M)


def rendered_objects(text: str) -> list[tuple[dict, str]]:
    """Every object of a `helm template` stream with the template it came from."""
    from ruamel.yaml import YAML  # here: the no-op path renders nothing and never loads the YAML parser
    from ruamel.yaml.error import YAMLError

    objects: list[tuple[dict, str]] = []
    yaml = YAML(typ="safe", pure=True)
    for chunk in re.split(r"(?m)^---\s*$", text):
        if not chunk.strip():
            continue
        source = _SOURCE.search(chunk)
        try:
            docs = list(yaml.load_all(chunk))
        except YAMLError as exc:
            raise StepFailed(f"helm rendered YAML that does not parse ({source.group(1) if source else '?'}): "
                             f"{str(exc).splitlines()[0]}") from None
        for doc in docs:
            if isinstance(doc, dict):
                if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
                    objects += [(item, source.group(1) if source else "") for item in doc["items"] if isinstance(item, dict)]
                else:
                    objects.append((doc, source.group(1) if source else ""))
    return objects


def rolled_back_to(text: str) -> int | None:
    """The revision a rollback copied, from `helm status -o json` of a release Helm rolled back
    (`info.description` is "Rollback to N"); None for any other release."""
    try:
        found = re.fullmatch(r"Rollback to (\d+)", str(json.loads(text)["info"].get("description", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return int(found.group(1)) if found else None


def release_status(text: str) -> tuple[str, int | None]:
    """(`info.status`, revision) from `helm status -o json`; ("unknown", None) when unreadable."""
    try:
        data = json.loads(text)
        return str(data["info"]["status"]), int(data["version"])
    except (ValueError, KeyError, TypeError):
        return "unknown", None
