"""`buildplane explain PATH…`: which path a change to a file takes (DESIGN §6's change → path table).

rebuild + release  the file is in a target's build context and not excluded by .dockerignore (or is its Dockerfile);
sync (no build)    the file is inside one of a target's sync rules: in dev, one layer through the registry, then
                   the release (a build when no image was built yet, or when other inputs changed too);
release only       the file is in a target's chart or is one of its values files;
nothing            neither, for every target.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..contract import project_path
from ..freshness import DockerIgnore
from ..freshness.digests import shown_name
from ..topology import Topology
from ._output import print_json

RANK = {"rebuild + release": 3, "sync (no build)": 2, "release only": 1, "nothing": 0}


@dataclass
class Explanation:
    path: str
    outcome: str = "nothing"
    targets: dict[str, str] = field(default_factory=dict)  # target → why it is affected
    notes: list[str] = field(default_factory=list)  # why it is not, where that is not obvious

    def line(self) -> str:
        if self.outcome == "nothing":
            why = "; ".join(self.notes) or "outside every build context, chart and values file"
            return f"{self.path}: nothing — {why}"
        parts = [f"{t} ({why})" for t, why in self.targets.items()]
        return f"{self.path}: {self.outcome} — " + "; ".join(parts)

    def to_json(self) -> dict:
        return {"path": self.path, "outcome": self.outcome, "targets": self.targets, "notes": self.notes}


def _inside(path: Path, root: Path) -> str | None:
    """path relative to root (posix), or None when path is not below root."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return rel.as_posix()


def _synced(topo: Topology, name: str, base: Path, rel: str) -> str | None:
    """Why a context file of a target is synced rather than built (dev), or None."""
    if not topo.targets[name].sync:
        return None
    from ..topology.sync_rules import for_target
    rule = next((r for r in for_target(topo, name, base) if r.covers(rel)), None)
    if rule is None:
        return None
    release = "; then released" if topo.targets[name].chart else ""
    return f"in dev, its sync rule {rule.src or '.'} → {rule.dest} puts it at {rule.image_path(rel)}{release}"


def explain(topo: Topology, paths: list[str], base: Path) -> list[Explanation]:
    out = []
    hints: dict[str, list] = {}  # a target's sync-rule suggestions: its context walked once, not once a path
    for raw in paths:
        path = Path(os.path.normpath(base / raw)).absolute()
        ex = Explanation(shown_name(raw))  # a name that is not UTF-8 is shown escaped, never a crash
        for name, t in topo.targets.items():
            context = project_path(base, t.context).absolute()
            dockerfile = project_path(base, t.dockerfile).absolute()
            kind, why = "nothing", ""
            rel = _inside(path, context)
            if path == dockerfile:
                kind, why = "rebuild + release", "its Dockerfile"
            elif rel is not None:
                ignore = DockerIgnore.for_context(context, dockerfile)
                if rel != "." and ignore.excluded(rel):
                    ex.notes.append(f"excluded from {name}'s build context by .dockerignore")
                elif _synced(topo, name, base, rel):
                    kind, why = "sync (no build)", _synced(topo, name, base, rel)
                else:
                    kind, why = "rebuild + release", f"in its build context {t.context}"
            elif t.chart and _inside(path, project_path(base, t.chart).absolute()) is not None:
                kind, why = "release only", f"in its chart {t.chart}"
            elif any(path == project_path(base, v).absolute() for v in t.all_values()):
                kind, why = "release only", "one of its values files"
            if kind == "rebuild + release" and not t.chart:
                kind, why = "rebuild + release", why + "; built and pushed, it has no chart to release"
            if kind == "rebuild + release" and rel is not None and not t.sync:
                if name not in hints:
                    hints[name] = _suggestions(topo, name, context, dockerfile)
                why += next((f"; `COPY {h.src or '.'} {h.dest}` copies {h.files} files: a sync rule takes such "
                             f"edits without a build — {h.rule()}" for h in hints[name]
                             if not h.src or rel.startswith(h.src)), "")
            if kind != "nothing":
                ex.targets[name] = why
                if RANK[kind] > RANK[ex.outcome]:
                    ex.outcome = kind
        if ex.targets:
            ex.notes = []
        out.append(ex)
    return out


def _suggestions(topo: Topology, name: str, context: Path, dockerfile: Path) -> list:
    """The sync rules that would spare this target's builds a COPY of thousands of files (topology/sync_hint.py)."""
    from ..contract import base_image_arg
    from ..freshness import walk_context
    from ..topology.sync_hint import MANY_FILES, suggest
    from ..topology.yaml_lines import expand_env
    t = topo.targets[name]
    names = {r: "" for r, _, _ in walk_context(context, DockerIgnore.for_context(context, dockerfile))}
    if len(names) <= MANY_FILES:
        return []
    args = {k: expand_env(v) for k, v in {**base_image_arg(topo), **t.build_args}.items()}
    return suggest(context, dockerfile, t.build_target, args, names)


def run(args, topology) -> int:
    topo, _ = topology(args)
    results = explain(topo, args.paths, Path.cwd())
    if args.json:
        print_json({"paths": [r.to_json() for r in results]})
    else:
        for r in results:
            print(r.line())
    return 0
