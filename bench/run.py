#!/usr/bin/env python3
"""buildplane benchmarks, as ratios against the naive way in one run (medians; these machines are noisy).

  make bench            (brings the lab up if needed)

1. No-op `up` (runtime + portal, nothing changed) vs the naive loop: `docker buildx build --push`
   with the same cache flags for each target.
2. Image inputs digest of a generated 10,000-file / 200 MB context: cold, and with a warm stat cache.
3. Cold build vs cache-imported rebuild (builder pruned) of the example's runtime image.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from buildplane.freshness import StatCache, image_inputs  # noqa: E402
from lab import lab_env, make_app, process_env, prune_builder  # noqa: E402

REPS = int(os.environ.get("BENCH_REPS", "5"))


def timed(argv, cwd, env) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:6])} … failed:\n{proc.stderr[-2000:]}")
    return took


def bp(*args: str) -> list[str]:
    return [sys.executable, "-m", "buildplane", "--topology", "topology.yaml", *args]


def noop_vs_naive(app: Path, env: dict) -> dict:
    timed(bp("up", "--mode", "dev", "--json"), app, env)  # make everything fresh first
    plan = json.loads(subprocess.run(bp("plan", "--mode", "dev", "--json", "--build-only"), cwd=app, env=env,
                                     capture_output=True, text=True, check=True).stdout)
    naive_argvs = [s["argv"] for s in plan["steps"] if s["kind"] == "build"]
    ours, naive = [], []
    for _ in range(REPS):
        ours.append(timed(bp("up", "--mode", "dev", "--json"), app, env))
        started = time.perf_counter()
        for argv in naive_argvs:
            subprocess.run(argv, cwd=app, env=env, capture_output=True, check=True, timeout=600)
        naive.append(time.perf_counter() - started)
    return {"buildplane_noop_up_s": statistics.median(ours), "naive_buildx_loop_s": statistics.median(naive),
            "ratio": statistics.median(naive) / statistics.median(ours)}


def digest_big_context() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Path(tmp) / "ctx"
        blob = os.urandom(20 * 1024)  # 10,000 files × 20 KiB = 200 MB
        for d in range(100):
            sub = ctx / f"pkg{d:03}"
            sub.mkdir(parents=True)
            for f in range(100):
                (sub / f"f{f:03}.bin").write_bytes(blob[f:] + blob[:f])
        (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
        cache_file = Path(tmp) / "statcache.json"
        cold, warm = [], []
        for _ in range(3):
            cache_file.unlink(missing_ok=True)
            started = time.perf_counter()
            image_inputs(ctx, ctx / "Dockerfile", build_args={}, build_target=None, platform=None,
                         cache=StatCache.open(cache_file)).digest
            cold.append(time.perf_counter() - started)
            StatCache.open(cache_file)  # noqa
            cache = StatCache.open(cache_file)
            image_inputs(ctx, ctx / "Dockerfile", build_args={}, build_target=None, platform=None, cache=cache)
            cache.save()
        for _ in range(REPS):
            started = time.perf_counter()
            image_inputs(ctx, ctx / "Dockerfile", build_args={}, build_target=None, platform=None,
                         cache=StatCache.open(cache_file))
            warm.append(time.perf_counter() - started)
        return {"files": 10_000, "bytes": 10_000 * len(blob), "cold_s": statistics.median(cold),
                "warm_s": statistics.median(warm), "ratio": statistics.median(cold) / statistics.median(warm)}


def cold_vs_cached(lab: dict, tmp: Path, env: dict) -> dict:
    cold, warm = [], []
    for i in range(3):
        app, _ = make_app(tmp / f"rebuild{i}", lab)  # new namespace: nothing in the cache registry
        prune_builder(lab)
        cold.append(timed(bp("up", "--mode", "dev", "runtime", "--build-only", "--json"), app, env))
        prune_builder(lab)
        warm.append(timed(bp("up", "--mode", "dev", "runtime", "--build-only", "--force", "--json"), app, env))
    return {"cold_s": statistics.median(cold), "cache_imported_s": statistics.median(warm),
            "ratio": statistics.median(cold) / statistics.median(warm)}


def main() -> None:
    lab = lab_env()
    env = process_env(lab)
    with tempfile.TemporaryDirectory() as tmp:
        app, _ = make_app(Path(tmp) / "app", lab)
        results = {"reps": REPS, "noop_up": noop_vs_naive(app, env), "digest_10k": digest_big_context(),
                   "rebuild": cold_vs_cached(lab, Path(tmp), env)}
    out = ROOT / "bench" / "results.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    n, d, r = results["noop_up"], results["digest_10k"], results["rebuild"]
    print(f"no-op up (runtime+portal): {n['buildplane_noop_up_s']:.3f}s vs naive buildx loop {n['naive_buildx_loop_s']:.3f}s "
          f"→ {n['ratio']:.1f}× faster")
    print(f"inputs digest, 10,000 files / 200 MB: cold {d['cold_s']:.3f}s, warm stat cache {d['warm_s']:.3f}s → {d['ratio']:.0f}×")
    print(f"runtime rebuild: cold {r['cold_s']:.2f}s, cache-imported {r['cache_imported_s']:.2f}s → {r['ratio']:.1f}×")
    print(f"(medians; written to {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
