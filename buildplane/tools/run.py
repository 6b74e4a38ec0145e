"""The one subprocess choke point (DESIGN §10).

argv lists only, never a shell; kubectl only with a read-only verb (the guard runs here, so no
caller can walk around it); the binary is resolved first (with an install hint when missing);
every call has a timeout; interrupt → terminate → kill; the quoted command is
logged, never the environment. Failures raise one CommandFailed with command, exit code
and the tail of stderr.

A `protected` command (a Helm upgrade) is never stopped because another target failed, and on an
interrupt it gets PROTECTED_GRACE_S to finish or roll back before it is terminated: a Helm killed
mid-upgrade can leave its release `pending-upgrade`, blocking every later upgrade. Other children
get the kernel's parent-death signal, so a `kill -9` of buildplane does not leave a build running;
with a ledger, every child is recorded while it runs so the next run can find orphans (children.py).
Output is decoded leniently: one non-UTF-8 byte in a build's output must not stop the pipe reader.
"""
from __future__ import annotations

import ctypes
import io
import os
import re
import shlex
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence


from ..errors import BuildplaneError, Interrupted, Missing, StepFailed
from . import children
from .kubectl import check_kubectl

INSTALL_HINTS = {
    "docker": "run `make lab-up` (local builder) or install Docker with buildx",
    "helm": "run `make provision` (Helm v4 under the lab bin dir) or install Helm",
    "tilt": "install Tilt (https://docs.tilt.dev/install.html) and put it on PATH",
    "kubectl": "install kubectl matching your cluster",
}

# Helm's kube-selection settings: with them in its environment Helm talks to another API server,
# user or context than the allowed one buildplane checked (`--kube-context` does not override them all).
HELM_KUBE_ENV = re.compile(r"^(HELM_KUBE[A-Z_]*|HELM_NAMESPACE)$")
PROTECTED_GRACE_S = float(os.environ.get("BUILDPLANE_HELM_GRACE_S", "120"))

_live: dict = {}  # id(proc) -> (proc, protected)
_live_lock = threading.Lock()
_cancelled = threading.Event()
_interrupts = 0
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork: the child only calls it
except (OSError, AttributeError):
    _prctl = None


class Cancelled(BuildplaneError):
    """A command its caller stopped on purpose (`Runner.run(cancel=…)`): not a failure of the tool."""


class CommandFailed(StepFailed):
    """A command exited non-zero or timed out."""

    def __init__(self, argv: Sequence[str], exit_code: int | None, stderr_tail: str, timed_out: bool = False):
        self.argv = list(argv)
        self.signalled = exit_code is not None and exit_code < 0  # stopped by a signal (sh: -15, -9)
        self.returncode = exit_code  # the tool's; the CLI's exit code stays StepFailed's (1)
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
    ledger: Path | None = None  # where running children are recorded (orphans of a killed run)

    def which(self, name: str) -> str:
        search = os.pathsep.join([*self.extra_path, self.path or os.environ.get("PATH", "")])
        found = shutil.which(name, path=search)
        if not found:
            hint = INSTALL_HINTS.get(name, f"install {name} and put it on PATH")
            raise Missing(f"{name}: not found on PATH; {hint}")
        return found

    def run(self, argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, cwd: str | None = None,
            on_line: Callable[[str], None] | None = None, stdin: str | None = None, check: bool = True,
            protected: bool = False, even_if_cancelled: bool = False,
            cancel: threading.Event | None = None) -> Result:
        """`protected`: see the module doc. `even_if_cancelled`: a short read-only question asked after
        an interrupt (what Helm left behind). `cancel`: set by the caller to stop this one command
        (its process group), which then raises `Cancelled`."""
        if _cancelled.is_set() and not even_if_cancelled:
            raise Interrupted("interrupted")
        name = Path(argv[0]).name
        if name == "kubectl":
            check_kubectl(list(argv))  # read-only verbs only, whoever calls: Refused (exit 3) before it starts
        binary = self.which(argv[0])
        if self.log:
            self.log("$ " + quote(argv))
        out, err, on_out, on_err = _sinks(on_line)
        environ = dict(os.environ) if env is None else dict(env)
        if name == "helm":
            environ = {k: v for k, v in environ.items() if not HELM_KUBE_ENV.match(k)}
        started = time.monotonic()
        import sh  # here: ~20 ms of import (asyncio with it) a run that starts no command never pays

        # No stdin: an empty one. With a line callback on stdout, sh would otherwise give the child a queue
        # nobody feeds, read by a thread polling it every 100 ms: +0.1 s on every build (buildx's progress).
        proc = sh.Command(binary)(
            *argv[1:], _bg=True, _bg_exc=False, _env=environ, _cwd=cwd, _decode_errors="replace",
            _out=on_out, _err=on_err, _in=stdin if stdin is not None else "", _ok_code=list(range(256)),
            _new_session=True,
            _preexec_fn=None if protected else _die_with_parent(os.getpid()),
        )
        recorded = children.record(self.ledger, proc.pid, quote(argv[:4]), protected) if self.ledger else None
        try:
            code, timed_out = _wait(proc, timeout, protected, cancel)
        finally:
            if recorded is not None:
                recorded.unlink(missing_ok=True)
        if _cancelled.is_set() and not (protected or even_if_cancelled):
            raise Interrupted("interrupted")
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{quote(argv[:3])} … stopped: its result was no longer needed")
        text = (lambda b: b.getvalue() if isinstance(b, io.StringIO) else "".join(b))
        result = Result(list(argv), code if code is not None else -1, text(out), text(err),
                        time.monotonic() - started)
        if check and (timed_out or code != 0):
            raise CommandFailed(argv, code, tail(result.stderr or result.stdout), timed_out)
        return result


    def capture(self, argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None,
                cwd: str | None = None) -> bytes:
        """A short read-only question whose answer is bytes (git's status of a large tree): started without
        the `sh` machinery, whose import alone costs more than the question; no terminal, stdin empty.
        The same rules: resolved binary, logged argv, a timeout, interrupt → terminate → kill, CommandFailed."""
        if _cancelled.is_set():
            raise Interrupted("interrupted")
        import subprocess

        binary = self.which(argv[0])
        if self.log:
            self.log("$ " + quote(argv))
        proc = subprocess.Popen([binary, *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True,
                                preexec_fn=_die_with_parent(os.getpid()))
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            children.stop_group(proc.pid, lambda: proc.poll() is None, 1.0)
            raise CommandFailed(argv, None, "", timed_out=True) from None
        except BaseException:
            children.stop_group(proc.pid, lambda: proc.poll() is None, 1.0)  # its own session: pgid = pid
            raise
        if proc.returncode != 0:
            raise CommandFailed(argv, proc.returncode, tail(err.decode("utf-8", "replace")))
        return out


def _sh_error():
    import sh

    return sh.ErrorReturnCode


def _sinks(on_line: Callable[[str], None] | None):
    """Where a command's output goes: plain buffers, or line callbacks that also keep it."""
    if on_line is None:
        # Plain buffers: sh's per-line callbacks add ~100 ms of reader latency to every call.
        out, err = io.StringIO(), io.StringIO()
        return out, err, out, err
    out_lines: list[str] = []
    err_lines: list[str] = []

    def keep(buffer: list[str]):
        def on(line) -> None:
            if isinstance(line, bytes):  # sh hands over bytes it could not decode; never let that raise here
                line = line.decode("utf-8", "replace")
            buffer.append(line)
            on_line(line.rstrip("\n"))
        return on

    return out_lines, err_lines, keep(out_lines), keep(err_lines)


def _die_with_parent(parent: int):
    """A pre-exec hook: the kernel sends the child SIGTERM when buildplane dies, even by SIGKILL."""
    def hook() -> None:
        if _prctl is not None:
            _prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(143)
    return hook


def _wait(proc, timeout: float, protected: bool = False,
          cancel: threading.Event | None = None) -> tuple[int | None, bool]:
    """(exit code or None when timed out, timed out?) — the process group is stopped on any way out."""
    with _live_lock:
        _live[id(proc)] = (proc, protected)
    timed_out = threading.Event()
    done = threading.Event()
    if cancel is not None:
        def watch() -> None:
            while not done.is_set():
                if cancel.wait(0.05):
                    _stop(proc, grace=0.5)
                    return
        threading.Thread(target=watch, daemon=True).start()

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
        except _sh_error() as exc:  # killed by a signal: sh reports it as an error
            signalled = exc.exit_code
    except BaseException:
        _stop(proc)
        raise
    finally:
        done.set()
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
    children.stop_group(pgid, proc.is_alive, grace)


def stop_all(*, interrupt: bool = False, log: Callable[[str], None] | None = None) -> None:
    """No new command starts; every live one is terminated, then killed — except protected ones.

    Another target's failure (`interrupt=False`) leaves protected commands to finish. An interrupt gives
    them PROTECTED_GRACE_S; a second interrupt stops them at once.
    """
    global _interrupts
    _cancelled.set()
    if interrupt:
        _interrupts += 1
    with _live_lock:
        live = list(_live.values())
    now = [p for p, protected in live if not protected or _interrupts > 1]
    spared = [p for p, protected in live if protected and _interrupts <= 1]
    threads = [threading.Thread(target=_stop, args=(p,), daemon=True) for p in now]
    if interrupt and spared:
        if log:
            log(f"waiting up to {PROTECTED_GRACE_S:g}s for {len(spared)} helm release(s) to finish or roll back; "
                "interrupt again to stop them now (a release stopped mid-upgrade may stay pending-upgrade)")
        threads += [threading.Thread(target=_stop_after, args=(p, PROTECTED_GRACE_S), daemon=True) for p in spared]
    for t in threads:
        t.start()
    for t in threads[:len(now)]:
        t.join(timeout=3)


def _stop_after(proc, grace: float) -> None:
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not proc.is_alive() or _interrupts > 1:
            break
        time.sleep(0.05)
    _stop(proc, grace=5.0)  # Helm handles TERM by cancelling its context: give it a moment to record that


def reset_cancel() -> None:
    global _interrupts
    _cancelled.clear()
    _interrupts = 0


def sleep(seconds: float) -> None:
    """time.sleep that ends at once, with Interrupted, when the run is cancelled (pollers, backoffs)."""
    if _cancelled.wait(seconds):
        raise Interrupted("interrupted")


def cancelled() -> bool:
    return _cancelled.is_set()


def quote(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
