"""`safehold agent run`: the long-running process that starts scheduled backups on time.

One daemon per agent folder (an exclusive lock on HOME/agent.pid, which also names its pid for `doctor`).
It starts each run as its own process, exactly as a manual `safehold backup` runs, so a scheduled job can be
stopped with `safehold jobs stop` without touching the daemon.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from safehold.agent.scheduler import IDLE_CHECK_S, Due, Scheduler
from safehold.errors import SafeholdError, raise_error


class DaemonLock:
    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file
        self._fd: int | None = None

    def __enter__(self) -> DaemonLock:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.pid_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise_error("AgentDaemonAlreadyRunning", pid=holder or "?")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:  # emptied, not removed: removing it would let two daemons lock two files
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


class Daemon:
    """Ask the scheduler, run what is due, sleep until the next time or a stop request."""

    def __init__(self, scheduler: Scheduler, run_job: Callable[[Due], int], log: Callable[[str], None],
                 after_run: Callable[[], None] | None = None) -> None:
        self.scheduler = scheduler
        self.run_job = run_job
        self.log = log
        self.after_run = after_run
        self.stopping = threading.Event()

    def once(self) -> Due | None:
        """Start the run that is due now, if any; returns it."""
        due = self.scheduler.take()
        if due is None:
            return None
        what = "catch-up run for" if due.catch_up else "scheduled run for"
        self.log(f"{what} {due.slot.isoformat(timespec='minutes')}" +
                 (f" ({due.missed} scheduled times missed)" if due.missed > 1 else ""))
        code = self.run_job(due)
        self.log(f"backup finished with exit code {code}")
        if self.after_run is not None:
            try:
                self.after_run()
            except Exception as exc:  # reporting is retried after the next run; the daemon keeps going
                self.log(f"could not report jobs to the vault: {exc}")
        return due

    def run(self) -> None:
        nxt = self.scheduler.next_time()
        self.log("agent daemon started; next backup " + (nxt.isoformat(timespec="minutes") if nxt else
                                                          "not scheduled (no policy with a schedule)"))
        while not self.stopping.is_set():
            try:
                self.once()
                wait = self.scheduler.wait_s()
            except (SafeholdError, OSError) as exc:  # a damaged policy, a full disk: say so, try again later
                self.log(f"cannot run the schedule: {exc}")
                wait = IDLE_CHECK_S
            self.stopping.wait(wait)
        self.log("agent daemon stopped")
