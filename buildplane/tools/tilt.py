"""Tilt's process, found again: `buildplane tilt up` records who it becomes, `tilt down` and deploy mode stop exactly that.

`tilt down` (Tilt's own) removes a Tiltfile's resources but leaves the `tilt up` process running and
watching files, so it would go on rebuilding into the dev namespace after a handback. Instead the
wrapper writes its own PID and the kernel's start time of that process, then `exec`s Tilt (same PID).
Stopping checks the PID still names that process and that it is still Tilt before any signal:
TERM, then KILL after a grace period. Linux /proc is the source of both facts.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BadInput
from ..state import read_json, write_json_atomic

STOP_GRACE_S = 10.0


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    fields = raw.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent: gone for every purpose here
        return None
    return int(fields[19])


def cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


@dataclass(frozen=True)
class TiltRecord:
    pid: int
    ticks: int
    binary: str
    argv: list[str]

    def is_running(self) -> bool:
        """Still the process the wrapper became, and still Tilt (a script's interpreter names it second)."""
        if start_ticks(self.pid) != self.ticks:
            return False
        return self.binary in cmdline(self.pid)[:2]


def read_record(path: Path) -> TiltRecord | None:
    data = read_json(path)
    try:
        return TiltRecord(int(data["pid"]), int(data["ticks"]), str(data["binary"]), list(data["argv"])) if data else None
    except (KeyError, TypeError, ValueError):
        return None


def exec_tilt(binary: str, args: list[str], record_path: Path) -> None:
    """Record this process, then become Tilt (never returns). Refuses while a recorded Tilt still runs."""
    running = read_record(record_path)
    if running is not None and running.is_running():
        raise BadInput(f"Tilt already runs (pid {running.pid}: {' '.join(running.argv)}); "
                       "stop it with `make tilt-down` (buildplane tilt down) first")
    ticks = start_ticks(os.getpid())
    argv = ["tilt", *args]
    write_json_atomic(record_path, {"pid": os.getpid(), "ticks": ticks, "binary": binary, "argv": argv,
                                    "cwd": os.getcwd(), "at": time.time()})
    os.execv(binary, argv)


def stop(record_path: Path, *, grace_s: float = STOP_GRACE_S, sleep: Callable[[float], None] = time.sleep) -> str:
    """Stop the recorded Tilt: TERM, then KILL after grace_s. Returns what happened, in one sentence."""
    record = read_record(record_path)
    if record is None:
        return "Tilt is not running (no `buildplane tilt up` recorded here): nothing to stop"
    if not record.is_running():
        record_path.unlink(missing_ok=True)
        return f"Tilt is not running (pid {record.pid} has exited): nothing to stop"
    os.kill(record.pid, signal.SIGTERM)
    waited = 0.0
    while waited < grace_s and record.is_running():
        sleep(0.05)
        waited += 0.05
    how = "TERM"
    if record.is_running():
        os.kill(record.pid, signal.SIGKILL)
        how = f"KILL after {grace_s:g}s"
        for _ in range(100):  # KILL cannot be caught; give the kernel up to 5 s to reap it
            if not record.is_running():
                break
            sleep(0.05)
    record_path.unlink(missing_ok=True)
    return f"stopped Tilt (pid {record.pid}, {how})"
