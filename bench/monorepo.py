#!/usr/bin/env python3
"""Monorepo scale: large contexts and many targets, buildplane vs the naive way, in one run.

A generated git work tree (files older than its index, as in a repository people use) holds:
  web       services/web: 50,000 small files under src/, `COPY src/ /www/`, no sync rule
  web-sync  the same context and Dockerfile with the rule `src/ → /www/`
  assets    services/assets: 200 MB in four files, and a page, `COPY . /data/`
  s01..s20  twenty small services (10 files each)
Scenarios, each the median of BENCH_REPS (default 3) runs on the lab's direct registries, cache off:
  noop-50k, edit-50k, sync-edit-50k      one-line edit of one file of web's src/
  noop-200mb, edit-200mb                 an edit of the page beside the large files
  noop-2, noop-20, edit-of-2, edit-of-20 the small services: `up` of two of them or all twenty, and one
                                         service edited among them
The naive way is `docker buildx build --push` of each target (what `plan --json` prints, under the
mode tag), which has no no-op. Written to bench/results.json under "monorepo"; printed as the README's
table. The builder's cache is pruned after the runs (outside the timing): they leave gigabytes there.

  python bench/monorepo.py          (the lab up: `make lab-up`)
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from lab import lab_env, process_env  # noqa: E402

REPS = int(os.environ.get("BENCH_REPS", "3"))
SMALL = [f"s{i:02d}" for i in range(1, 21)]


def sh(argv: list[str], cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:6])} … failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def generate(repo: Path, lab: dict) -> None:
    base = f"{lab['mirror']}/library/busybox:1.35"
    web = repo / "services/web"
    for d in range(250):
        (web / f"src/d{d:03d}").mkdir(parents=True)
        for f in range(200):
            (web / f"src/d{d:03d}/f{f:03d}.txt").write_text(f"file {d} {f}\n")
    (web / "Dockerfile").write_text(f"FROM {base}\nCOPY src/ /www/\n")
    assets = repo / "services/assets"
    (assets / "blobs").mkdir(parents=True)
    for i in range(4):
        with open(assets / f"blobs/model{i}.bin", "wb") as fh:
            fh.write(os.urandom(50 * 1024 * 1024))
    (assets / "page.html").write_text("<p>assets</p>\n")
    (assets / "Dockerfile").write_text(f"FROM {base}\nCOPY . /data/\n")
    for name in SMALL:
        svc = repo / "services" / name
        svc.mkdir(parents=True)
        for f in range(10):
            (svc / f"f{f}.txt").write_text(f"{name} {f}\n")
        (svc / "Dockerfile").write_text(f"FROM {base}\nCOPY . /app/\n")
    ns = f"mono{uuid.uuid4().hex[:8]}"
    targets = {
        "web": {"context": "services/web", "dockerfile": "services/web/Dockerfile", "image": "web"},
        "web-sync": {"context": "services/web", "dockerfile": "services/web/Dockerfile", "image": "web-sync",
                     "sync": [{"src": "src/", "dest": "/www/"}]},
        "assets": {"context": "services/assets", "dockerfile": "services/assets/Dockerfile", "image": "assets"},
        **{n: {"context": f"services/{n}", "dockerfile": f"services/{n}/Dockerfile", "image": n} for n in SMALL},
    }
    topo = {
        "version": 1, "name": "monorepo-bench",
        "registries": {"final": f"{lab['final']}/{ns}", "cache": f"{lab['cache']}/{ns}/buildcache",
                       "mirror": lab["mirror"], "plain_http": [lab["final"], lab["cache"], lab["mirror"]]},
        "kube": {"contexts": ["buildplane-lab"]},  # never reached: no target has a chart
        "builder": {"network": "host"},
        "targets": targets,
        "modes": {"dev": {"namespace": "mono-dev", "tag": "dev-{git_sha}-{digest12}",
                          "cache": {"import": False, "export": False}, "release": False},
                  "staging": {"namespace": "mono-staging", "tag": "staging-{git_sha}",
                              "cache": {"import": False, "export": False}, "release": False}},
    }
    (repo / "topology.yaml").write_text(json.dumps(topo, indent=1))  # YAML is a superset of JSON
    (repo / ".gitignore").write_text(".buildplane/\n")
    time.sleep(1.1)  # the index written a tick after the files: none of them racy
    sh(["git", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-qm", "generated"], repo)


def bp(*args: str) -> list[str]:
    return [sys.executable, "-m", "buildplane", "--topology", "topology.yaml", *args]


def naive(repo: Path, env: dict, targets: list[str]) -> list[list[str]]:
    plan = json.loads(sh(bp("plan", "--mode", "dev", "--json", *targets), repo, env))
    out = []
    for step in plan["steps"]:
        if step["kind"] == "build":
            argv = [a for a in step["argv"] if a != "--provenance=false"]
            argv[argv.index("--tag") + 1] = step["image"]
            out.append(argv)
    return out


def timed(argvs: list[list[str]], repo: Path, env: dict) -> float:
    started = time.perf_counter()
    for argv in argvs:
        sh(argv, repo, env)
    return time.perf_counter() - started


def edit(path: Path) -> None:
    path.write_text(path.read_text() + f"edit {uuid.uuid4().hex}\n")


def measure(repo: Path, env: dict) -> dict:
    page = repo / "services/web/src/d100/f100.txt"
    rows = {
        # scenario: (buildplane targets, file edited before each run or None, naive targets)
        "noop-50k": (["web"], None, ["web"]),
        "edit-50k": (["web"], page, ["web"]),
        "sync-edit-50k": (["web-sync"], page, None),
        "noop-200mb": (["assets"], None, ["assets"]),
        "edit-200mb": (["assets"], repo / "services/assets/page.html", ["assets"]),
        "noop-2": (SMALL[:2], None, SMALL[:2]),
        "noop-20": (SMALL, None, SMALL),
        "edit-of-2": (SMALL[:2], repo / "services/s01/f0.txt", SMALL[:2]),
        "edit-of-20": (SMALL, repo / "services/s01/f0.txt", SMALL),
    }
    argvs = {name: naive(repo, env, row[2]) if row[2] else None for name, row in rows.items()}
    for targets in (["web", "web-sync", "assets"], SMALL):  # cold: the builder, the registry, the state
        sh(bp("up", "--mode", "dev", *targets), repo, env)
        sh(bp("up", "--mode", "dev", *targets), repo, env)  # and the tree memo, which learns on a walk
    cells: dict[str, dict] = {}
    for name, (targets, edited, _) in rows.items():
        bp_times, naive_times = [], []
        for _ in range(REPS):
            if edited is not None:
                edit(edited)
            bp_times.append(timed([bp("up", "--mode", "dev", *targets)], repo, env))
            if argvs[name]:
                if edited is not None:
                    edit(edited)
                naive_times.append(timed(argvs[name], repo, env))
        cell = {"buildplane": round(statistics.median(bp_times), 3)}
        if naive_times:
            cell["naive"] = round(statistics.median(naive_times), 3)
            cell["ratio"] = round(cell["naive"] / cell["buildplane"], 2)
        cells[name] = cell
        print(f"monorepo {name}: {cell}", file=sys.stderr, flush=True)
    cells["edit-of-20-vs-of-2"] = {"ratio": round(cells["edit-of-20"]["buildplane"] /
                                                  cells["edit-of-2"]["buildplane"], 2)}
    return cells


def table(cells: dict) -> str:
    rows = ["| scenario | buildplane | naive `docker buildx build --push` |", "|---|---|---|"]
    for name, c in cells.items():
        if "buildplane" not in c:
            rows.append(f"| {name} | {c['ratio']}× | |")
            continue
        naive_cell = f"{c['naive']:.2f} s ({c['ratio']}× slower)" if "naive" in c else "—"
        rows.append(f"| {name} | {c['buildplane']:.2f} s | {naive_cell} |")
    return "\n".join(rows)


def main() -> None:
    lab = lab_env()
    env = process_env(lab)
    for name in ("CI", "BUILDPLANE_WAIT_CACHE"):
        env.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="bp-bench-mono-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        generate(repo, lab)
        cells = measure(repo, env)
    # Outside the timing: the runs leave gigabytes in the builder's cache (every 200 MB layer and
    # 50,000-file snapshot), which would make the next prune, a test's among them, take minutes.
    subprocess.run(["docker", "buildx", "prune", "-af"], env=env, capture_output=True, timeout=1800)
    out = ROOT / "bench" / "results.json"
    data = json.loads(out.read_text()) if out.is_file() else {}
    data[os.environ.get("BENCH_KEY", "monorepo")] = {"reps": REPS, "registries": "direct (the lab's loopback)", "cells": cells}
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(table(cells))


if __name__ == "__main__":
    main()
