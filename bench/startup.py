"""Median wall time of one buildplane command run from a given source tree, to compare two commits.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/startup.py /tmp/before 9 --help
    .venv/bin/python bench/startup.py . 9 --help

The tree goes first on PYTHONPATH, so the same interpreter and dependencies run either version. Quote
medians: a 2-core machine is noisy, so run the two trees alternately and more than once.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: startup.py TREE RUNS ARGS…")
    tree, runs, args = os.path.abspath(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    env = {**os.environ, "PYTHONPATH": tree}
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "buildplane", *args], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False, timeout=600)
        took.append(time.perf_counter() - started)
    print(f"{statistics.median(took):.3f}")


if __name__ == "__main__":
    main()
