"""Start, watch and stop the processes of a federation on this machine.

Each child runs in its own session (process group), writes to its own log file, and is stopped
with SIGTERM then SIGKILL; the supervisor stops every child when it exits, on Ctrl-C, on SIGTERM
and at interpreter exit, so a demo or a test leaves no process behind.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from fedge.errors import FedgeError

__all__ = ["ManagedProcess", "Supervisor", "fedge_argv"]

log = logging.getLogger(__name__)


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``with``/``finally``/atexit cleanup stops the children.

    Python's default SIGTERM action ends the process at once, skipping all cleanup; a demo
    stopped by ``timeout`` or a service manager would then leave its federation running.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def handler(signum: int, frame: object) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, handler)


def fedge_argv(*args: str) -> list[str]:
    """The command line that runs ``fedge ARGS`` with this interpreter."""
    return [sys.executable, "-m", "fedge", *args]


@dataclass
class ManagedProcess:
    """One child process and where its output goes."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id once started."""
        return None if self.popen is None else self.popen.pid

    def tail(self, lines: int = 20) -> str:
        """The last lines of its log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def group_alive(self) -> bool:
        """True while any process of its group (the child or what it started) still runs."""
        return self.popen is not None and (
            self.popen.poll() is None or _group_alive(self.popen.pid)
        )

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process's whole group (also once the child itself has exited)."""
        if self.group_alive():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def wait_group(self, deadline: float) -> bool:
        """Wait until the child is reaped and its group is empty, or ``deadline``; True if gone."""
        if self.popen is None:
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        while self.group_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the group, wait up to ``timeout`` s, then SIGKILL; returns the exit code."""
        if self.popen is None:
            return None
        self.signal_group(signal.SIGTERM)
        if not self.wait_group(time.monotonic() + timeout):
            log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
            self.signal_group(signal.SIGKILL)
            self.wait_group(time.monotonic() + timeout)
        return self.popen.returncode


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies, which only wait to be reaped, do not
    count); read from /proc where there is one."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class Supervisor:
    """A set of child processes that is always cleaned up."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, ManagedProcess] = {}
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.stop_all)
        _exit_on_sigterm()

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        """Start ``argv`` as child ``name`` (names are unique)."""
        with self._lock:
            if name in self.processes and self.processes[name].alive:
                raise FedgeError(f"a process named {name!r} is already running")
            proc = ManagedProcess(name, list(argv), self.log_dir / f"{name}.log", env=env or {})
            child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **proc.env}
            with proc.log_path.open("ab") as out:
                proc.popen = subprocess.Popen(
                    proc.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=child_env,
                    start_new_session=True,
                )
            self.processes[name] = proc
            log.info("started %s (pid %d): %s", name, proc.popen.pid, " ".join(proc.argv))
            return proc

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        """Stop one child."""
        return self.processes[name].stop(timeout)

    def kill(self, name: str) -> None:
        """SIGKILL one child at once (failure injection)."""
        proc = self.processes[name]
        proc.signal_group(signal.SIGKILL)
        if proc.popen is not None:
            proc.popen.wait(timeout=10)

    def wait_until(
        self, check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2
    ) -> None:
        """Poll ``check`` until true; fail with the logs of any child that died meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if check():
                    return
            dead = [
                p for p in self.processes.values() if p.popen and p.popen.poll() not in (None, 0)
            ]
            if dead:
                p = dead[0]
                raise FedgeError(
                    f"{p.name} exited with {p.popen.returncode if p.popen else '?'} while waiting for {what}:\n{p.tail()}"
                )
            time.sleep(interval)
        raise FedgeError(f"timed out after {timeout:.0f} s waiting for {what}")

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every child, newest first."""
        if self._closed:
            return
        for proc in reversed(list(self.processes.values())):
            proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in reversed(list(self.processes.values())):
            if not proc.wait_group(deadline):  # what it started is stopped too, or killed
                log.warning("%s did not stop in %.0f s; killing it", proc.name, timeout)
                proc.signal_group(signal.SIGKILL)
                proc.wait_group(time.monotonic() + 5)
        self._closed = True

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
