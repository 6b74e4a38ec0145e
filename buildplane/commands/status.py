"""`buildplane status`: per target, is what runs (the last release's image) what the working tree builds now?

Answered from the release records the release step writes (image inputs, chart and values hashes),
so it needs no cluster and no registry: one stat per file, thanks to the stat cache. `--pods` asks the
cluster too, read-only (tools/kube.py): the release, its pods, and whether they run what was released.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..contract import project_path, select_targets
from ..freshness.bases import BaseDigests
from ..freshness import StatCache, changed_files, release_files, shown_paths, target_inputs
from ..state import StateDir, read_json, unpacked
from ..tools import cache_export
from ..topology import Topology
from ._output import print_json, printable


@dataclass(frozen=True)
class TargetStatus:
    target: str
    state: str  # in-sync | drifted | rendered | never-released | no-chart
    sentence: str
    image_digest: str | None = None
    revision: int | None = None
    changed: tuple[str, ...] = ()
    cache_export: dict | None = None  # the last registry cache export: running, succeeded, failed, superseded

    def to_json(self) -> dict:
        out = {"state": self.state, "message": self.sentence, "image_digest": self.image_digest,
               "revision": self.revision, "changed": list(self.changed)}
        if self.cache_export is not None:
            out["cache_export"] = self.cache_export
        return out


def export_sentence(record: dict, now: float) -> str:
    """One line on the last cache export: what people need when the next machine's build is slow."""
    status = record.get("status")
    ago = f"{max(0, int(now - float(record.get('finished_at') or record.get('started_at') or now)))}s ago"
    if status == cache_export.RUNNING:
        return f"cache export to {record.get('ref')} running (pid {record.get('pid')}, started {ago})"
    if status == cache_export.SUCCEEDED:
        return f"cache exported to {record.get('ref')} {ago} in {record.get('duration_s')}s"
    if status == cache_export.SUPERSEDED:
        return f"cache export superseded {ago} by a later build of the target"
    return (f"cache export to {record.get('ref')} FAILED {ago}: {record.get('error') or 'no reason given'} "
            f"(log: {record.get('log')}; `buildplane up --mode {record.get('mode')} --wait-cache --force "
            f"{record.get('target')}` exports it again)")


def target_status(topo: Topology, mode: str, name: str, base: Path, state: StateDir, cache: StatCache,
                  bases: BaseDigests) -> TargetStatus:
    t = topo.targets[name]
    if not t.chart:
        return TargetStatus(name, "no-chart", "has no chart: it is built, never released")
    record = read_json(state.release_record(mode, name))
    if not record:
        return TargetStatus(name, "never-released",
                            f"never released in {mode} mode from this working tree: run `buildplane up --mode {mode} {name}`")
    digest, revision = record.get("image_digest"), record.get("revision")
    from ..plan import mode_provenance
    context, _, _, inputs = target_inputs(topo, name, base, cache, bases, provenance=mode_provenance(topo, mode))
    image_changed: list[str] = []
    if record.get("image_inputs_digest") != inputs.digest:
        before = unpacked(record.get("image_files"))
        image_changed = shown_paths(context, changed_files(before, inputs.files, limit=4)) if before is not None else []
        if not image_changed:
            image_changed = [f"build args or Dockerfile settings of {name}"]
    chart, values = release_files(project_path(base, t.chart), tuple(project_path(base, v) for v in t.values_for(mode)), cache)
    release_changed = [f"{t.chart}/{n}" for n in changed_files(record.get("chart_files") or {}, chart, limit=4)]
    release_changed += changed_files(record.get("values_files") or {}, values, limit=4)
    changed = image_changed + release_changed
    if changed:
        what = ", ".join(changed[:3]) + (" and more" if len(changed) > 3 else "")
        return TargetStatus(name, "drifted", f"your edits have not reached the cluster: {what} changed since the last "
                            f"release (run `buildplane up --mode {mode} {name}`)", digest, revision, tuple(changed))
    if not record.get("applied"):
        return TargetStatus(name, "rendered", "up to date but only rendered (no allowed kube context was reachable): "
                            f"{record.get('rendered')} is not running anywhere", digest, revision)
    where = f"{record.get('namespace')} on {record.get('kube_context')}"
    return TargetStatus(name, "in-sync", f"what runs in {where} (image {digest[:19] if digest else '?'}…, "
                        f"revision {revision}) is what the working tree builds", digest, revision)


def status(topo: Topology, mode: str, targets: list[str], base: Path, state: StateDir) -> list[TargetStatus]:
    cache = StatCache.open(state.statcache)
    # The last answers for base images, however old: status asks no registry.
    bases = BaseDigests(state.base_digests, lambda ref: None, max_age_s=float("inf"))
    try:
        out = []
        for name in targets:
            result = target_status(topo, mode, name, base, state, cache, bases)
            export = cache_export.current(state, mode, name)
            if export is not None:
                export = {k: export.get(k) for k in ("status", "ref", "mode", "target", "pid", "run_id", "started_at", "finished_at",
                                                     "duration_s", "error", "log") if export.get(k) is not None}
                result = replace(result, cache_export=export)
            out.append(result)
        return out
    finally:
        cache.save()


def pod_reports(topo: Topology, mode: str, names: list[str], state: StateDir, reader, runner) -> list:
    """Per released target, read-only: the release (helm status), its workloads and pods (the API), and
    whether they run the digest this tree last released (diagnostics.judge)."""
    from .. import diagnostics
    from ..contract import image_repo, release_name
    from ..tools.manifests import release_status
    from ._cluster import selector

    out = []
    for name in names:
        release = release_name(topo, name)
        helm = runner.run(["helm", "status", release, "--namespace", reader.namespace, "--kube-context",
                           reader.context, "-o", "json"], timeout=30, check=False)
        status_word, revision = release_status(helm.stdout) if helm.exit_code == 0 else (
            "not installed" if "not found" in helm.stderr else "unknown", None)
        record = read_json(state.release_record(mode, name)) or {}
        label = selector(topo, name)
        report = diagnostics.TargetPods(name, release, status_word, revision,
                                        record.get("image_digest") if record.get("applied") else None)
        report.workloads = diagnostics.workloads(reader.deployments(label), reader.autoscalers(label))
        report.pods = [diagnostics.pod_view(p, image_repo(topo, name)) for p in reader.pods(label)]
        out.append(diagnostics.judge(report, mode))
    return out


def print_pods(reports: list) -> None:
    for r in reports:
        for line in pods_lines(r):
            print(printable(line))  # names, phases and messages come from the cluster: shown, never obeyed


def pods_lines(r) -> list[str]:
    """The lines `status --pods` prints for one target's report."""
    head = f"{r.target}: release {r.release} {r.release_status}" + (f" at revision {r.revision}" if r.revision else "")
    verdict = ("runs the image buildplane released" if r.runs_released else
               "does NOT run the image buildplane released" if r.runs_released is False else "")
    out = [f"{head}{'; ' + verdict if verdict else ''}"]
    out += [f"  {w.line()}" for w in r.workloads]
    for p in r.pods:
        runs = ", ".join(d[:19] + "…" for d in p.digests) or "no image yet"
        out.append(f"  pod {p.name}: {p.phase}, ready {p.ready}, restarts {p.restarts}, runs {runs}"
                   + (f" — {p.problem}" if p.problem else ""))
    if r.fix:
        out.append(f"  fix: {r.fix}")
    return out


def run(args, topology) -> int:
    topo, _ = topology(args)
    if getattr(args, "pods", False):
        return run_pods(args, topo)
    names = select_targets(topo, tuple(args.targets)) if args.targets else list(topo.targets)
    results = status(topo, args.mode, names, Path.cwd(), StateDir.from_env())
    if args.json:
        print_json({"mode": args.mode, "targets": {r.target: r.to_json() for r in results}})
    else:
        now = time.time()
        for r in results:
            print(f"{r.target}: {r.state} — {r.sentence}")
            if r.cache_export:
                print(f"{r.target}: {export_sentence(r.cache_export, now)}")
    return 0


def run_pods(args, topo: Topology) -> int:
    """`status --pods`: what runs in the cluster, read-only, for the mode's namespace and the allowed context."""
    from ..tools.kube import KubeReader
    from ..tools.run import Runner
    from ._cluster import cluster, released_targets

    names = released_targets(topo, list(args.targets))  # bad input (exit 2) before a missing context (exit 4)
    where = cluster(topo, args.mode, args.kube_context)
    reports = pod_reports(topo, args.mode, names, StateDir.from_env(), KubeReader(where.context, where.namespace),
                          Runner())
    if args.json:
        print_json({"mode": args.mode, "namespace": where.namespace, "kube_context": where.context,
                    "targets": {r.target: r.to_json() for r in reports}})
    else:
        print_pods(reports)
    return 0 if all(r.runs_released is not False for r in reports) else 1
