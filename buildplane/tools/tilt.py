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
        """Still the process the wrapper became, and still Tilt: the kernel's own name of the program it
        runs (/proc/PID/exe; a compiled Tilt's argv[0] is just `tilt`), or, for a script, the path its
        interpreter was given."""
        if start_ticks(self.pid) != self.ticks:
            return False
        return runs_program(self.pid, self.binary)


def runs_program(pid: int, binary: str) -> bool:
    """Whether process `pid` runs the executable `binary` (or is an interpreter running that script)."""
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    want = os.path.realpath(binary)
    if exe == want:
        return True
    return any(os.path.realpath(a) == want for a in cmdline(pid)[1:2] if a.startswith("/") or os.sep in a)


def ancestors(pid: int | None = None) -> list[int]:
    """This process's parents up to init (from /proc/PID/stat's ppid field)."""
    out, pid = [], pid or os.getpid()
    for _ in range(64):
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(raw.rsplit(")", 1)[1].split()[1])
        if pid <= 1:
            break
        out.append(pid)
    return out


def tilts_of(worktree: Path, binary: str | None) -> list[TiltRecord]:
    """`tilt up`/`tilt ci` processes running in this working tree that nobody recorded (started by hand):
    each is checked to run the Tilt binary on PATH and to have its working directory here."""
    if binary is None:
        return []
    found = []
    root = os.path.realpath(worktree)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        argv = cmdline(pid)
        if len(argv) < 2 or argv[1] not in ("up", "ci") or not runs_program(pid, binary):
            continue
        try:
            cwd = os.path.realpath(f"/proc/{pid}/cwd")
        except OSError:
            continue
        ticks = start_ticks(pid)
        if cwd == root and ticks is not None:
            found.append(TiltRecord(pid, ticks, binary, argv))
    return found


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


def stop(record_path: Path, *, grace_s: float = STOP_GRACE_S, sleep: Callable[[float], None] = time.sleep,
         binary: str | None = None, worktree: Path | None = None) -> str:
    """Stop every Tilt of this working tree: the one `buildplane tilt up` recorded and any started by hand
    here (`binary`: the Tilt on PATH). TERM, then KILL after grace_s. A Tilt that is this process's own
    parent (the Tilt UI's deploy-mode button) is not stopped here: killing it would kill this run before
    Argo CD is asked anything; a detached stopper (`stop_after_exit`) stops it once this run has ended.
    One sentence."""
    record = read_record(record_path)
    targets: list[TiltRecord] = []
    said: list[str] = []
    exited = record is not None and not record.is_running()
    if exited:
        record_path.unlink(missing_ok=True)
    elif record is not None:
        targets.append(record)
    for other in tilts_of(worktree or Path.cwd(), binary):
        if all(other.pid != t.pid for t in targets):
            targets.append(other)
    mine = set(ancestors())
    for t in targets:
        if t.pid in mine:
            stop_after_exit(t, record_path)
            said.append(f"Tilt (pid {t.pid}) runs this command: it is stopped once this command has ended")
            continue
        how = _stop_one(t, grace_s, sleep)
        said.append(f"stopped Tilt (pid {t.pid}{', started by hand' if t is not record else ''}, {how})")
        if t is record:
            record_path.unlink(missing_ok=True)
    if said:
        return "; ".join(said)
    if exited:
        return f"Tilt is not running (pid {record.pid} has exited): nothing to stop"
    return "Tilt is not running (no `buildplane tilt up` recorded here): nothing to stop"


def stop_after_exit(tilt: TiltRecord, record_path: Path) -> int:
    """Stop `tilt` once this process has exited: a detached stopper (its own session, so Tilt stopping
    its resources' process groups does not reach it). Returns the stopper's pid."""
    import subprocess
    import sys
    me = os.getpid()
    args = [str(me), str(start_ticks(me)), str(tilt.pid), str(tilt.ticks), tilt.binary, str(record_path)]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from buildplane.tools.tilt import _stop_when_gone; "
                             "_stop_when_gone(*sys.argv[1:])", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    return proc.pid


def _stop_when_gone(waiter: str, waiter_ticks: str, pid: str, ticks: str, binary: str, record_path: str) -> None:
    """The stopper: once process `waiter` has ended, stop that Tilt (if it is still the same Tilt) and drop
    the record that names it."""
    while start_ticks(int(waiter)) == int(waiter_ticks):
        time.sleep(0.05)
    tilt = TiltRecord(int(pid), int(ticks), binary, [])
    if tilt.is_running():
        _stop_one(tilt, STOP_GRACE_S, time.sleep)
    kept = read_record(Path(record_path))
    if kept is not None and kept.pid == tilt.pid:
        Path(record_path).unlink(missing_ok=True)


def _stop_one(record: TiltRecord, grace_s: float, sleep: Callable[[float], None]) -> str:
    """TERM, then KILL after grace_s; how it was stopped."""
    try:
        os.kill(record.pid, signal.SIGTERM)
    except OSError:
        return "already gone"
    waited = 0.0
    while waited < grace_s and record.is_running():
        sleep(0.05)
        waited += 0.05
    if not record.is_running():
        return "TERM"
    os.kill(record.pid, signal.SIGKILL)
    for _ in range(100):  # KILL cannot be caught; give the kernel up to 5 s to reap it
        if not record.is_running():
            break
        sleep(0.05)
    return f"KILL after {grace_s:g}s"
