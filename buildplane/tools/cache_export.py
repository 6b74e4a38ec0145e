"""The registry cache export, run in the background after the dev loop is done with the image.

On a registry 40 ms away, exporting a `mode=max` cache costs 0.5–0.9 s of round trips, and nobody in
the dev loop waits for it: the builder that just built holds every layer. So a dev run starts the
export as a detached process (its own session: it outlives `up`, and Tilt's next trigger) and moves on.
It is never lost: its record (`state.cache_export`) says running / succeeded / failed / superseded with
pid, start time, duration and error, `status` shows it, and the process ends with a `cache.export`
Build Plane Event. A later build of the same target and scope *supersedes* a running export (it exports
again, of newer inputs) instead of racing it on the builder and the registry ref; `--wait-cache` waits
for it instead.

The spawner writes the "running" record before the export may start (the child waits for its stdin to
close), so no later run can miss it; after that only the child writes the record.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ..state import StateDir, read_json, write_json_atomic
from .children import stop_group
from .tilt import start_ticks

EXPORT_TIMEOUT_S = 1800.0
SUPERSEDE_WAIT_S = 5.0
PREDECESSOR_WAIT_S = 20.0
RUNNING, SUCCEEDED, FAILED, SUPERSEDED = "running", "succeeded", "failed", "superseded"


def _alive(record: dict) -> bool:
    pid, ticks = record.get("pid"), record.get("ticks")
    return isinstance(pid, int) and ticks is not None and start_ticks(pid) == ticks


def current(state: StateDir, mode: str, target: str) -> dict | None:
    """The last export's record; a "running" one whose process is gone says so (it was killed)."""
    record = read_json(state.cache_export(mode, target))
    if record and record.get("status") == RUNNING and not _alive(record):
        record = {**record, "status": FAILED, "error": "the export process ended without a word (killed?)"}
    return record


def supersede(state: StateDir, mode: str, target: str, log: Callable[[str], None], *, wait: bool = True) -> bool:
    """Stop an export still running for this target (this run exports again); True when one was stopped.

    With `wait=False` (the next export runs in the background too) it is only told to stop: the build
    does not wait for it, and the next export, before it starts, waits for this one to be gone (`main`),
    so the cache ref always ends at the newest export. An export in the build itself waits here."""
    record = read_json(state.cache_export(mode, target))
    if not record or record.get("status") != RUNNING or not _alive(record):
        return False
    pid = record["pid"]
    log(f"{target}: stopping the cache export still running from run {record.get('run_id', '?')} "
        f"(pid {pid}): this build exports the cache again")
    if not wait:
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:  # gone meanwhile
            pass
        return True
    stop_group(pid, lambda: _alive(record), grace=SUPERSEDE_WAIT_S, kill_wait=1.0)
    after = read_json(state.cache_export(mode, target)) or {}
    if after.get("status") == RUNNING and after.get("pid") == pid:  # killed before it could say so
        write_json_atomic(state.cache_export(mode, target), {**after, "status": SUPERSEDED, "finished_at": time.time()})
    return True


def _await_predecessor(state: StateDir, spec: dict, own: dict) -> None:
    """In the export process: an export this one superseded may still be stopping; it goes first, so
    it cannot write the cache ref after this one. Then this one's record is the one on file."""
    before = spec.get("after")
    if before:
        stop_group(before["pid"], lambda: _alive(before), grace=PREDECESSOR_WAIT_S, kill_wait=2.0)
    path = state.cache_export(spec["mode"], spec["target"])
    if (read_json(path) or {}).get("pid") != own["pid"]:  # the predecessor wrote its end over ours
        write_json_atomic(path, own)


def wait(state: StateDir, mode: str, target: str, log: Callable[[str], None], sleep: Callable[[float], None],
         timeout_s: float = EXPORT_TIMEOUT_S) -> dict | None:
    """Wait for a running export of this target to end (`--wait-cache`); its final record."""
    record = current(state, mode, target)
    if not record or record.get("status") != RUNNING:
        return record
    log(f"{target}: waiting for the cache export started by run {record.get('run_id', '?')} (pid {record['pid']})")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = current(state, mode, target)
        if not record or record.get("status") != RUNNING:
            return record
        sleep(0.1)
    return record


def spawn(state: StateDir, spec: dict, env: dict[str, str] | None = None) -> int:
    """Start the export detached; returns its pid once its "running" record is written."""
    path = state.cache_export(spec["mode"], spec["target"])
    log_path = state.cache_export_log(spec["mode"], spec["target"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    earlier = read_json(path)
    if earlier and earlier.get("status") == RUNNING and _alive(earlier):  # told to stop, maybe not gone yet
        spec = {**spec, "after": {"pid": earlier["pid"], "ticks": earlier["ticks"]}}
    with open(log_path, "wb") as log_fh:
        proc = subprocess.Popen([sys.executable, "-m", "buildplane.tools.cache_export", str(state.root)],
                                stdin=subprocess.PIPE, stdout=log_fh, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, close_fds=True)
    own = {"status": RUNNING, "pid": proc.pid, "ticks": start_ticks(proc.pid), "started_at": time.time(),
           **{k: v for k, v in spec.items() if k not in ("argv", "after")}, "log": str(log_path)}
    write_json_atomic(path, own)
    proc.stdin.write(json.dumps({**spec, "own": own}).encode())
    proc.stdin.close()  # the go signal: the record is there
    return proc.pid


def _finish(path: Path, own: dict, status: str, started: float, error: str = "") -> dict:
    """This export's end; written to the record only while the record is still this export's (a later
    export that superseded it owns the record from its spawn on)."""
    record = {**own, "status": status, "duration_s": round(time.monotonic() - started, 3), "finished_at": time.time()}
    if error:
        record["error"] = error
    if (read_json(path) or {}).get("pid") == own.get("pid"):
        write_json_atomic(path, record)
    return record


def main(root: str) -> int:
    """The detached process: run the export, record its end, send the `cache.export` event."""
    from ..errors import Interrupted
    from ..telemetry import events
    from ..telemetry.setup import reporter_from_env
    from .run import CommandFailed, Runner, stop_all

    spec = json.loads(sys.stdin.read() or "{}")
    state = StateDir(Path(root))
    path = state.cache_export(spec["mode"], spec["target"])
    signal.signal(signal.SIGTERM, lambda *_: stop_all(interrupt=True))
    started = time.monotonic()

    def out(line: str) -> None:
        sys.stdout.write(events.redact(line.rstrip("\n")) + "\n")
        sys.stdout.flush()

    own = spec["own"]  # the "running" record spawn wrote for this process
    try:
        _await_predecessor(state, spec, own)
        Runner().run(spec["argv"], timeout=float(spec.get("timeout_s", EXPORT_TIMEOUT_S)), on_line=out)
        record = _finish(path, own, SUCCEEDED, started)
    except Interrupted:
        record = _finish(path, own, SUPERSEDED, started, "stopped: a later build of the target exports again")
    except CommandFailed as exc:
        record = _finish(path, own, FAILED, started, events.redact(exc.message))
    except Exception as exc:  # never a traceback with no record: the next `status` must say what happened
        record = _finish(path, own, FAILED, started, events.redact(f"{type(exc).__name__}: {exc}"))
    reporter = reporter_from_env(spec.get("service_name", "buildplane"), state.events)
    reporter.emit(events.cache_export(record))
    reporter.close()
    return 0 if record["status"] != FAILED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
