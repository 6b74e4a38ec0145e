"""The one subprocess choke point (DESIGN §10).

argv lists only, never a shell; kubectl only with a read-only verb (the guard runs here, so no
caller can walk around it); the binary is resolved first (with an install hint when missing);
every call has a timeout; interrupt → terminate → kill; the quoted command is
logged, never the environment. Failures raise one CommandFailed with command, exit code
and the tail of stderr.
"""
from __future__ import annotations

import io
import os
import shlex
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import sh

from ..errors import Interrupted, Missing, StepFailed
from .kubectl import check_kubectl

INSTALL_HINTS = {
    "docker": "run `make lab-up` (local builder) or install Docker with buildx",
    "helm": "run `make provision` (Helm v4 under the lab bin dir) or install Helm",
    "tilt": "install Tilt (https://docs.tilt.dev/install.html) and put it on PATH",
    "kubectl": "install kubectl matching your cluster",
}

_live: dict = {}
_live_lock = threading.Lock()
_cancelled = threading.Event()


class CommandFailed(StepFailed):
    """A command exited non-zero or timed out."""

    def __init__(self, argv: Sequence[str], exit_code: int | None, stderr_tail: str, timed_out: bool = False):
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail
        self.timed_out = timed_out
        what = "timed out" if timed_out else f"exited {exit_code}"
        last = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else ""
        super().__init__(f"{quote(argv[:3])} … {what}" + (f": {last}" if last else ""))


@dataclass
class Result:
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float


@dataclass
class Runner:
    """Runs commands. Tests inject a fake with the same `run` signature."""

    path: str | None = None
    log: Callable[[str], None] | None = None
    extra_path: list[str] = field(default_factory=list)

    def which(self, name: str) -> str:
        search = os.pathsep.join([*self.extra_path, self.path or os.environ.get("PATH", "")])
        found = shutil.which(name, path=search)
        if not found:
            hint = INSTALL_HINTS.get(name, f"install {name} and put it on PATH")
            raise Missing(f"{name}: not found on PATH; {hint}")
        return found

    def run(self, argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, cwd: str | None = None,
            on_line: Callable[[str], None] | None = None, stdin: str | None = None, check: bool = True) -> Result:
        if _cancelled.is_set():
            raise Interrupted("interrupted")
        if Path(argv[0]).name == "kubectl":
            check_kubectl(list(argv))  # read-only verbs only, whoever calls: Refused (exit 3) before it starts
        binary = self.which(argv[0])
        if self.log:
            self.log("$ " + quote(argv))
        out, err, on_out, on_err = _sinks(on_line)
        started = time.monotonic()
        proc = sh.Command(binary)(
            *argv[1:], _bg=True, _bg_exc=False, _env=env if env is not None else dict(os.environ), _cwd=cwd,
            _out=on_out, _err=on_err, _in=stdin, _ok_code=list(range(256)), _new_session=True,
        )
        code, timed_out = _wait(proc, timeout)
        if _cancelled.is_set():
            raise Interrupted("interrupted")
        text = (lambda b: b.getvalue() if isinstance(b, io.StringIO) else "".join(b))
        result = Result(list(argv), code if code is not None else -1, text(out), text(err),
                        time.monotonic() - started)
        if check and (timed_out or code != 0):
            raise CommandFailed(argv, code, tail(result.stderr or result.stdout), timed_out)
        return result


def _sinks(on_line: Callable[[str], None] | None):
    """Where a command's output goes: plain buffers, or line callbacks that also keep it."""
    if on_line is None:
        # Plain buffers: sh's per-line callbacks add ~100 ms of reader latency to every call.
        out, err = io.StringIO(), io.StringIO()
        return out, err, out, err
    out_lines: list[str] = []
    err_lines: list[str] = []

    def keep(buffer: list[str]):
        def on(line: str) -> None:
            buffer.append(line)
            on_line(line.rstrip("\n"))
        return on

    return out_lines, err_lines, keep(out_lines), keep(err_lines)


def _wait(proc, timeout: float) -> tuple[int | None, bool]:
    """(exit code or None when timed out, timed out?) — the process group is stopped on any way out."""
    with _live_lock:
        _live[id(proc)] = proc
    timed_out = threading.Event()

    def on_timeout() -> None:
        timed_out.set()
        _stop(proc)

    # A timer enforces the timeout, so waiting costs no polling latency (sh's wait(timeout) polls at 100 ms).
    timer = threading.Timer(timeout, on_timeout)
    timer.daemon = True
    timer.start()
    signalled: int | None = None
    try:
        try:
            proc.wait()
        except sh.ErrorReturnCode as exc:  # killed by a signal: sh reports it as an error
            signalled = exc.exit_code
    except BaseException:
        _stop(proc)
        raise
    finally:
        timer.cancel()
        with _live_lock:
            _live.pop(id(proc), None)
    if timed_out.is_set():
        return None, True
    return (signalled if signalled is not None else proc.exit_code), False


def _stop(proc, grace: float = 1.0) -> None:
    """terminate, then kill after `grace` seconds; the whole process group (children of the tool too)."""
    try:
        pgid = os.getpgid(proc.pid)
    except (ProcessLookupError, OSError):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, OSError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not proc.is_alive():
                return
            time.sleep(0.02)


def stop_all() -> None:
    """Called on SIGINT/SIGTERM: no new command starts; every live one is terminated, then killed."""
    _cancelled.set()
    with _live_lock:
        procs = list(_live.values())
    threads = [threading.Thread(target=_stop, args=(p,), daemon=True) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=3)


def reset_cancel() -> None:
    _cancelled.clear()


def cancelled() -> bool:
    return _cancelled.is_set()


def quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
