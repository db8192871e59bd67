"""What `safehold doctor` reads from the running system: live processes, the mount table, open files, locks.

Linux only (/proc); small functions that return facts and never raise for a process that went away.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def live_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def fs_type(path: Path) -> str | None:
    """The type of the file system holding `path`, from the mount table (longest mount point that contains it)."""
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        mount = fields[4].encode().decode("unicode_escape") if len(fields) > 4 else ""
        fstype = right.split()[0] if right else "?"
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and (best is None or len(mount) >= best[0]):
            best = (len(mount), fstype)
    return best[1] if best else None


def processes_holding(folder: Path) -> list[str]:
    """`pid (command)` of other processes with a file below `folder` open."""
    root = os.path.realpath(folder) + "/"
    me = os.getpid()
    found: list[str] = []
    with os.scandir("/proc") as it:
        pids = [e.name for e in it if e.name.isdigit()]
    for name in pids:
        if int(name) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{name}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(root):
                try:
                    comm = Path(f"/proc/{name}/comm").read_text().strip()
                except OSError:
                    comm = "?"
                found.append(f"{name} ({comm})")
                break
    return found


def lock_holder(lock_file: Path) -> str | None:
    """Who holds the job lock, when someone does (its file names the job and pid)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)
    return None
