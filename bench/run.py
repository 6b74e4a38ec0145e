#!/usr/bin/env python3
"""buildplane benchmarks, as ratios against the naive way in one run (medians; these machines are noisy).

  make bench            (brings the lab up if needed)

1. No-op `up` (runtime + portal, nothing changed) vs the naive loop: `docker buildx build --push`
   with the same cache flags for each target.
2. Image inputs digest of a generated 10,000-file / 200 MB context: cold, and with a warm stat cache.
3. Cold build vs cache-imported rebuild (builder pruned) of the example's runtime image.
4. Telemetry cost: a no-op `up` with the Collector down / blackholed vs with no OTLP endpoint (added ms per
   run), and the hot-path cost of one event (reporter call → queues) with file + OTLP sinks.

  BENCH_ONLY=telemetry make bench   runs one part (noop, digest, rebuild, telemetry)
"""
from __future__ import annotations

import json
import os
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
    # The naive way: the same cache flags with the export in the build, buildx's defaults otherwise.
    plan = json.loads(subprocess.run(bp("plan", "--mode", "dev", "--json", "--build-only"), cwd=app,
                                     env={**env, "BUILDPLANE_WAIT_CACHE": "true"},
                                     capture_output=True, text=True, check=True).stdout)
    naive_argvs = [[a for a in s["argv"] if a != "--provenance=false"] for s in plan["steps"] if s["kind"] == "build"]
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


def export_done(app: Path, target: str) -> None:
    """Wait (outside the timing) for the background cache export the dev run left: the rebuild after the
    prune imports what it exported — a prune while it runs would leave no cache to import."""
    record = app / f".buildplane/state/cache-export-dev-{target}.json"
    deadline = time.monotonic() + 300
    while record.is_file() and json.loads(record.read_text()).get("status") == "running":
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: the cache export of {target} did not end within 300 s")
        time.sleep(0.05)
    if record.is_file() and json.loads(record.read_text()).get("status") != "succeeded":
        raise SystemExit(f"bench: the cache export of {target} failed: {record.read_text()}")


def cold_vs_cached(lab: dict, tmp: Path, env: dict) -> dict:
    cold, warm = [], []
    for i in range(3):
        app, _ = make_app(tmp / f"rebuild{i}", lab)  # new namespace: nothing in the cache registry
        prune_builder(lab)
        cold.append(timed(bp("up", "--mode", "dev", "runtime", "--build-only", "--json"), app, env))
        export_done(app, "runtime")
        prune_builder(lab)
        warm.append(timed(bp("up", "--mode", "dev", "runtime", "--build-only", "--force", "--json"), app, env))
    return {"cold_s": statistics.median(cold), "cache_imported_s": statistics.median(warm),
            "ratio": statistics.median(cold) / statistics.median(warm)}


def telemetry_cost(app: Path, env: dict) -> dict:
    from telemetry_backends import Blackhole, closed_port_url

    base = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    timed(bp("up", "--mode", "dev", "--json"), app, base)  # fresh first
    runs: dict[str, list[float]] = {"none": [], "down": [], "blackholed": []}
    with Blackhole() as hole:
        for _ in range(REPS):
            runs["none"].append(timed(bp("up", "--mode", "dev", "--json"), app, base))
            runs["down"].append(timed(bp("up", "--mode", "dev", "--json"), app,
                                      {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": closed_port_url()}))
            runs["blackholed"].append(timed(bp("up", "--mode", "dev", "--json"), app,
                                            {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": hole.url}))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"noop_up_no_otlp_s": med["none"], "added_ms_collector_down": (med["down"] - med["none"]) * 1000,
            "added_ms_collector_blackholed": (med["blackholed"] - med["none"]) * 1000, **hot_path_cost()}


def hot_path_cost(events: int = 2000) -> dict:
    """The run's own thread pays for building an event and offering it to each sink's queue — nothing else."""
    from buildplane.steps.base import Status, StepResult
    from buildplane.steps.build import BuildFacts
    from buildplane.telemetry.setup import reporter_from_env
    from telemetry_backends import closed_port_url

    class P:
        mode, targets, revision = "dev", ["runtime"], "abc1234"

    class S:
        kind, target, id, cache_scope = "build", "runtime", "build:runtime", "dev/runtime"

    facts = BuildFacts("r:t", "r:bp-1", "dev/runtime", {"cached_steps": 3, "total_steps": 4}, "sha256:" + "0" * 64)
    result = StepResult("build", "runtime", Status.SUCCEEDED, "src/app.py changed", 1.5, facts)
    per_event = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(REPS):
            reporter = reporter_from_env("bench", Path(tmp) / "events.jsonl", {"OTEL_EXPORTER_OTLP_ENDPOINT": closed_port_url()})
            started = time.perf_counter()
            for _ in range(events // 2):
                reporter.step_started(P, "run", S)
                reporter.step_finished(P, "run", S, result)
            per_event.append((time.perf_counter() - started) / events)
            reporter.close()
    return {"hot_path_ms_per_event": statistics.median(per_event) * 1000}


PARTS = ("noop", "digest", "rebuild", "telemetry")


def main() -> None:
    lab = lab_env()
    env = process_env(lab)
    only = os.environ.get("BENCH_ONLY")
    parts = [only] if only else list(PARTS)
    if only and only not in PARTS:
        raise SystemExit(f"bench: BENCH_ONLY={only!r}; valid: {', '.join(PARTS)}")
    out = ROOT / "bench" / "results.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results["reps"] = REPS
    with tempfile.TemporaryDirectory() as tmp:
        app, _ = make_app(Path(tmp) / "app", lab)
        if "noop" in parts:
            results["noop_up"] = noop_vs_naive(app, env)
        if "digest" in parts:
            results["digest_10k"] = digest_big_context()
        if "rebuild" in parts:
            results["rebuild"] = cold_vs_cached(lab, Path(tmp), env)
        if "telemetry" in parts:
            results["telemetry"] = telemetry_cost(app, env)
    out.write_text(json.dumps(results, indent=2) + "\n")
    n, d, r, t = (results.get(k) for k in ("noop_up", "digest_10k", "rebuild", "telemetry"))
    if n:
        print(f"no-op up (runtime+portal): {n['buildplane_noop_up_s']:.3f}s vs naive buildx loop "
              f"{n['naive_buildx_loop_s']:.3f}s → {n['ratio']:.1f}× faster")
    if d:
        print(f"inputs digest, 10,000 files / 200 MB: cold {d['cold_s']:.3f}s, warm stat cache {d['warm_s']:.3f}s "
              f"→ {d['ratio']:.0f}×")
    if r:
        print(f"runtime rebuild: cold {r['cold_s']:.2f}s, cache-imported {r['cache_imported_s']:.2f}s → {r['ratio']:.1f}×")
    if t:
        print(f"telemetry: no-op up {t['noop_up_no_otlp_s']:.3f}s without OTLP; added {t['added_ms_collector_down']:.0f} ms "
              f"with the Collector down, {t['added_ms_collector_blackholed']:.0f} ms blackholed; "
              f"{t['hot_path_ms_per_event'] * 1000:.0f} µs per event on the hot path")
    print(f"(medians; written to {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
