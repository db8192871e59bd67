"""`safehold agent run`: the long-running process that starts scheduled backups on time.

One daemon per agent folder (an exclusive lock on HOME/agent.pid, which also names its pid for `doctor`).
It starts each run as its own process, exactly as a manual `safehold backup` runs, so a scheduled job can be
stopped with `safehold jobs stop` without touching the daemon.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from safehold.agent.joblock import HolderLock
from safehold.agent.scheduler import IDLE_CHECK_S, Due, Scheduler
from safehold.errors import SafeholdError, raise_error


def _daemon_running(holder: str) -> NoReturn:
    raise_error("AgentDaemonAlreadyRunning", pid=holder or "?")


class DaemonLock(HolderLock):
    """One daemon per agent folder; the lock file (HOME/agent.pid) names its pid for `doctor`."""

    def __init__(self, pid_file: Path) -> None:
        super().__init__(pid_file, str(os.getpid()), _daemon_running)


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
