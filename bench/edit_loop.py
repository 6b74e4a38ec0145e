#!/usr/bin/env python3
"""The edit loop against a registry across a network (#13): buildplane vs the naive ways, in one run.

Networks: "direct" (the lab's loopback registries) and "wan" (the same registries behind bench/wan.py:
40 ms round trip, 50 Mbit/s; BENCH_RTT_MS / BENCH_MBIT to change). Targets: runtime + portal.
Scenarios: no-op; one-line edit to portal on a warm builder; the same edit after `docker buildx prune -af`.
Ways:
  naive-cache     per target `docker buildx build --push --tag {mode tag}` with the registry cache
                  (--cache-from/--cache-to type=registry,mode=max), then `helm template` — what a Makefile does
  naive-nocache   the same without the registry cache
  bp-cache-on     `buildplane up --mode dev --remote-cache --rebuild` (the build path, though portal's page is
                  inside its sync rule)
  bp-cache-off    `buildplane up --mode dev --rebuild` with the cache off
  bp-sync         `buildplane up --mode dev --remote-cache`: the edit is synced (#14), one layer through the
                  registry API, no build
Each cell: the median of BENCH_REPS (default 5) runs; ratios against the best naive way of the row (and
bp-sync's against buildplane's own build path, bp-cache-on).
Pacing (BENCH_PACINGS, default both):
  settled       saves with a pause between them: buildplane's background cache export of one run is
                waited for, outside the timing, before the next run (the ways interleaved)
  back-to-back  saves one right after another (format-on-save, Tilt re-triggering): each way's runs in a
                row, nothing the last run left running waited for; its exports are waited for only after
                its last run, outside the timing, so they never load another way's runs. No-op and edit.
Written to bench/results.json under "edit_loop" ("networks": settled, "back_to_back") and printed as the
README's tables.

  BENCH_NETWORKS=wan python bench/edit_loop.py
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
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from lab import lab_env, make_app, process_env, prune_builder  # noqa: E402
from wan import WanProxy  # noqa: E402

REPS = int(os.environ.get("BENCH_REPS", "5"))
RTT_MS = float(os.environ.get("BENCH_RTT_MS", "40"))
MBIT = float(os.environ.get("BENCH_MBIT", "50"))
WAYS = ("naive-cache", "naive-nocache", "bp-cache-on", "bp-cache-off", "bp-sync")
BP_ARGS = {"bp-cache-on": ["--remote-cache", "--rebuild"], "bp-cache-off": ["--rebuild"], "bp-sync": ["--remote-cache"]}
SCENARIOS = ("noop", "edit", "edit-after-prune")
PACINGS = os.environ.get("BENCH_PACINGS", "back-to-back,settled").split(",")
TARGETS = ("runtime", "portal")


def run(argv: list[str], cwd: Path, env: dict) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:6])} … failed:\n{proc.stderr[-2000:]}")


def bp(*args: str) -> list[str]:
    return [sys.executable, "-m", "buildplane", "--topology", "topology.yaml", *args]


def naive_argvs(app: Path, env: dict) -> list[list[str]]:
    """Per target: buildx --push under the mode tag (registry cache flags when `cache`), then helm template.
    buildx's defaults otherwise: the attestation buildplane leaves out of dev images stays in."""
    plan = json.loads(subprocess.run(bp("plan", "--mode", "dev", "--json", *TARGETS), cwd=app,
                                     env={**env, "BUILDPLANE_WAIT_CACHE": "true"},  # --cache-to in the build
                                     capture_output=True, text=True, check=True).stdout)
    out = []
    for step in plan["steps"]:
        if step["kind"] == "build":
            argv = [a for a in step["argv"] if a != "--provenance=false"]  # the topology decides the cache flags
            argv[argv.index("--tag") + 1] = step["image"]  # the naive loop pushes the mode tag it deploys
            out.append(argv)
        elif step["kind"] == "release":
            argv = list(step["argv"])
            i = len(argv) - 1 - argv[::-1].index("-f")  # the last -f: the image values file buildplane writes
            del argv[i:i + 2]
            out.append(argv + ["--set", f"image.repository={step['image_values']['image']['repository']}",
                               "--set", "image.digest=sha256:" + "0" * 64])
    return out


class Way:
    def __init__(self, name: str, app: Path, env: dict) -> None:
        self.name, self.app, self.env = name, app, env
        self.naive = naive_argvs(app, env) if name.startswith("naive") else None
        self.exports: list[float] = []
        self.last_wait = 0.0
        (app / ".buildplane" / "builds").mkdir(parents=True, exist_ok=True)  # the naive argv keeps --metadata-file

    def once(self, settle: bool = True) -> float:
        started = time.perf_counter()
        if self.naive is None:
            run(bp("up", "--mode", "dev", *BP_ARGS[self.name], *TARGETS), self.app, self.env)
        else:
            for argv in self.naive:
                run(argv, self.app, self.env)
        took = time.perf_counter() - started
        if settle:
            self.exports += self.wait_for_exports()
        return took

    def wait_for_exports(self) -> list[float]:
        """buildplane's background cache exports, waited for outside the timing (so they never load the
        next way's measurement); their durations are reported beside the table."""
        took = []
        for path in (self.app / ".buildplane/state").glob("cache-export-dev-*.json"):
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                record = json.loads(path.read_text())
                if record.get("status") != "running":
                    break
                time.sleep(0.05)
            if record.get("started_at", 0) >= self.last_wait and record.get("status") == "succeeded":
                took.append(record["duration_s"])
        self.last_wait = time.time()
        return took


def edit(app: Path) -> None:
    page = app / "examples/fractalops/portal/www/index.html"
    page.write_text(page.read_text() + f"<!-- edit {uuid.uuid4().hex} -->\n")


def app_for(tmp: Path, lab: dict, regs: dict[str, str], way: str) -> Path:
    app, ns = make_app(tmp / way, lab, cache=True)
    text = (app / "topology.yaml").read_text()
    for lab_addr, addr in regs.items():
        text = text.replace(lab_addr, addr)
    if way == "bp-cache-off" or way == "naive-nocache":
        text = text.replace("cache: {import: true, export: true}", "cache: {import: false, export: false}")
    (app / "topology.yaml").write_text(text)
    return app


def docker_config_for(regs: dict[str, str], env: dict, tmp: Path) -> dict:
    """The lab's Docker config, with each proxied registry given the credentials of the one behind it
    (a user's `docker login` names the host they reach, here the proxy's address)."""
    lab_cfg = Path(env["DOCKER_CONFIG"])
    cfg = json.loads((lab_cfg / "config.json").read_text())
    auths = cfg.setdefault("auths", {})
    for behind, front in regs.items():
        if behind in auths and front != behind:
            auths[front] = auths[behind]
    out = tmp / "docker-config"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "config.json").chmod(0o600)
    for name in ("cli-plugins", "buildx"):
        if (lab_cfg / name).exists() and not (out / name).exists():
            (out / name).symlink_to(lab_cfg / name)
    return {**env, "DOCKER_CONFIG": str(out)}


def measure(network: str, lab: dict, tmp: Path) -> dict:
    env = process_env(lab)
    for name in ("CI", "BUILDPLANE_WAIT_CACHE"):  # the dev loop as a developer's shell runs it
        env.pop(name, None)
    with ExitStack() as stack:
        regs = {}
        for key, addr in (("final", lab["final"]), ("cache", lab["cache"]), ("mirror", lab["mirror"])):
            regs[addr] = stack.enter_context(WanProxy(addr, rtt_ms=RTT_MS, mbit_s=MBIT)).address if network == "wan" else addr
        env = docker_config_for(regs, env, tmp / network)
        ways = [Way(w, app_for(tmp / network, lab, regs, w), env) for w in WAYS]
        for way in ways:
            way.once()  # cold: fills the builder and the registries
        cells: dict[str, dict[str, float]] = {s: {} for s in SCENARIOS}
        for scenario in SCENARIOS:
            times: dict[str, list[float]] = {w.name: [] for w in ways}
            for _ in range(REPS):
                for way in ways:  # interleaved, so drift on a noisy machine hits every way alike
                    if scenario != "noop":
                        edit(way.app)
                    if scenario == "edit-after-prune":
                        prune_builder(lab)
                    times[way.name].append(way.once())
            cells[scenario] = {w: round(statistics.median(t), 3) for w, t in times.items()}
            bp_on = next(w for w in ways if w.name == "bp-cache-on")
            if bp_on.exports:
                cells[scenario]["bp_background_export_s"] = round(statistics.median(bp_on.exports), 3)
            bp_on.exports = []
            best = min(cells[scenario]["naive-cache"], cells[scenario]["naive-nocache"])
            cells[scenario]["ratio_bp_cache_on"] = round(best / cells[scenario]["bp-cache-on"], 2)
            cells[scenario]["ratio_bp_cache_off"] = round(best / cells[scenario]["bp-cache-off"], 2)
            cells[scenario]["ratio_bp_sync"] = round(best / cells[scenario]["bp-sync"], 2)
            cells[scenario]["ratio_sync_vs_build"] = round(cells[scenario]["bp-cache-on"] / cells[scenario]["bp-sync"], 2)
            print(f"{network} {scenario}: {cells[scenario]}", file=sys.stderr, flush=True)
        back = back_to_back(ways, network) if "back-to-back" in PACINGS else {}
    return {"settled": cells, "back_to_back": back}


def back_to_back(ways: list[Way], network: str) -> dict:
    """Each way's saves one right after another; exports left running (see the module's docstring)."""
    cells: dict[str, dict[str, float]] = {}
    for scenario in ("noop", "edit"):
        times: dict[str, list[float]] = {}
        for way in ways:
            times[way.name] = []
            for _ in range(REPS):
                if scenario != "noop":
                    edit(way.app)
                times[way.name].append(way.once(settle=False))
            way.wait_for_exports()  # outside the timing, before the next way
        c = {w: round(statistics.median(t), 3) for w, t in times.items()}
        best = min(c["naive-cache"], c["naive-nocache"])
        for key, way in (("ratio_bp_cache_on", "bp-cache-on"), ("ratio_bp_cache_off", "bp-cache-off"),
                         ("ratio_bp_sync", "bp-sync")):
            c[key] = round(best / c[way], 2)
        c["ratio_sync_vs_build"] = round(c["bp-cache-on"] / c["bp-sync"], 2)
        cells[scenario] = c
        print(f"{network} back-to-back {scenario}: {c}", file=sys.stderr, flush=True)
    return cells


def table(results: dict, key: str = "networks") -> str:
    rows = ["| network | scenario | naive, registry cache | naive, no cache | buildplane build, cache on | "
            "buildplane build, cache off | buildplane sync (× naive / × build) |",
            "|---|---|---|---|---|---|---|"]
    for network, cells in results[key].items():
        for scenario, c in cells.items():
            rows.append(f"| {network} | {scenario} | {c['naive-cache']:.2f} s | {c['naive-nocache']:.2f} s | "
                        f"{c['bp-cache-on']:.2f} s ({c['ratio_bp_cache_on']}×) | {c['bp-cache-off']:.2f} s "
                        f"({c['ratio_bp_cache_off']}×) | {c['bp-sync']:.2f} s ({c['ratio_bp_sync']}× / "
                        f"{c['ratio_sync_vs_build']}×) |")
    return "\n".join(rows)


def main() -> None:
    lab = lab_env()
    buildx = subprocess.run(["docker", "buildx", "version"], env=process_env(lab), capture_output=True, text=True).stdout.strip()
    networks = os.environ.get("BENCH_NETWORKS", "direct,wan").split(",")
    results = {"reps": REPS, "rtt_ms": RTT_MS, "mbit_s": MBIT, "buildx": buildx, "targets": list(TARGETS),
               "networks": {}}
    results["back_to_back"] = {}
    with tempfile.TemporaryDirectory(prefix="bp-bench-edit-") as tmp:
        for network in networks:
            measured = measure(network, lab, Path(tmp))
            results["networks"][network] = measured["settled"]
            if measured["back_to_back"]:
                results["back_to_back"][network] = measured["back_to_back"]
    out = ROOT / "bench" / "results.json"
    data = json.loads(out.read_text()) if out.is_file() else {}
    kept = data.get("edit_loop", {})
    for key in ("networks", "back_to_back"):  # a run of some networks keeps the others' last figures
        results[key] = {**kept.get(key, {}), **results[key]}
    data["edit_loop"] = results
    out.write_text(json.dumps(data, indent=2) + "\n")
    print("Settled (a pause between saves):")
    print(table(results))
    if results["back_to_back"]:
        print("\nBack to back (no pause, nothing waited for):")
        print(table(results, "back_to_back"))


if __name__ == "__main__":
    main()
