"""One job at a time per machine: an exclusive flock on a file in the cache folder.

The kernel drops the lock when the holder dies, so a crashed job never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

from safehold.errors import raise_error


class HolderLock:
    """An exclusive flock on a file that names its holder; the file is emptied, never removed, at the end
    (removing it would let two holders lock two different files). `refuse` raises the error for a busy lock."""

    def __init__(self, path: Path, holder: str, refuse: Callable[[str], NoReturn]) -> None:
        self.path = path
        self.holder = holder
        self.refuse = refuse
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            self.refuse(holder)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.holder}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _another_job(holder: str) -> NoReturn:
    raise_error("AnotherJobInProgress", detail=f"held by {holder}" if holder else None)


class JobLock(HolderLock):
    def __init__(self, path: Path, job: str) -> None:
        super().__init__(path, f"{job} pid {os.getpid()}", _another_job)
        self.job = job
