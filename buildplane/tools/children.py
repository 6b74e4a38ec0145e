"""Child processes that outlive a killed buildplane: recorded while they run, found by the next run.

A run killed with SIGKILL cannot stop its children. Builds get a parent-death signal from the kernel
(see `run.py`); a Helm upgrade deliberately does not, since stopping it mid-upgrade can leave the
release `pending-upgrade`. So every child is recorded under the state dir while it runs (PID and
kernel start time, like Tilt's record), and the next run, before it touches a target:
- stops what is left of an orphaned build (its whole process group: TERM, then KILL);
- waits, bounded and saying so, for an orphaned Helm to finish or roll back.
A record whose owner still runs belongs to a concurrent run and is left alone.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable

from ..state import read_json, write_json_atomic
from .tilt import start_ticks

ORPHAN_HELM_WAIT_S = 120.0


def _me() -> tuple[int, int | None]:
    return os.getpid(), start_ticks(os.getpid())


def record(ledger: Path, pid: int, what: str, protected: bool) -> Path:
    owner, owner_ticks = _me()
    path = ledger / f"{pid}.json"
    write_json_atomic(path, {"pid": pid, "ticks": start_ticks(pid), "what": what, "protected": protected,
                             "owner": owner, "owner_ticks": owner_ticks, "at": time.time()})
    return path


def _alive(pid, ticks) -> bool:
    return ticks is not None and start_ticks(int(pid)) == ticks


def reap_orphans(ledger: Path, log: Callable[[str], None], *, helm_wait_s: float = ORPHAN_HELM_WAIT_S,
                 sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Deal with the children of runs that were killed; returns one sentence per orphan handled."""
    said: list[str] = []
    if not ledger.is_dir():
        return said
    for path in sorted(ledger.glob("*.json")):
        data = read_json(path)
        if data is None:
            path.unlink(missing_ok=True)
            continue
        if _alive(data.get("owner", 0), data.get("owner_ticks")):
            continue  # a concurrent run's child: not an orphan
        if not _alive(data.get("pid", 0), data.get("ticks")):
            path.unlink(missing_ok=True)
            continue
        pid, what = int(data["pid"]), str(data.get("what", "?"))
        if data.get("protected"):
            line = f"waiting up to {helm_wait_s:g}s for `{what}` (pid {pid}), left running by a killed run, to finish"
            log(line)
            waited = 0.0
            while waited < helm_wait_s and _alive(pid, data["ticks"]):
                sleep(0.1)
                waited += 0.1
            if _alive(pid, data["ticks"]):
                said.append(f"`{what}` (pid {pid}) from a killed run still runs after {helm_wait_s:g}s; "
                            "left alone: check `helm status` before releasing again")
                log(said[-1])
                continue
            said.append(f"`{what}` (pid {pid}) from a killed run has finished")
        else:
            # It was started in its own session: its process group holds its children too.
            stop_group(pid, lambda: _alive(pid, data["ticks"]), grace=2.0, kill_wait=2.0)
            said.append(f"stopped `{what}` (pid {pid}), left running by a killed run")
            log(said[-1])
        path.unlink(missing_ok=True)
    return said


def stop_group(pgid: int, alive: Callable[[], bool], grace: float = 1.0, kill_wait: float = 1.0) -> None:
    """TERM the process group, then KILL it after `grace` seconds; returns once `alive()` says it is gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        if not alive():
            return
        try:
            os.killpg(pgid, sig)
        except OSError:  # gone already, or not ours
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive():
            time.sleep(0.02)
