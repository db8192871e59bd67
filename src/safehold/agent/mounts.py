"""The mounts this agent made (one record per mount point in HOME/mounts/, with the serving process's id),
the state of a mount point, whether FUSE can work here, and unmounting through fusermount3.

Not the file system itself (agent/mountfs.py) nor its FUSE binding (agent/fuse_adapter.py).
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from safehold.agent.home import AgentHome, write_private
from safehold.errors import raise_error

FS_TYPE = "fuse.safehold"
FREE, MOUNTED, OURS, DEAD = "free", "mounted", "ours", "dead"


@dataclass(frozen=True)
class MountRecord:
    mountpoint: str
    pid: int
    recovery_point: str  # an id, or "all"
    started_ns: int
    idle_timeout_s: float | None
    log: str


def _path(home: AgentHome, mountpoint: str) -> Path:
    return home.root / "mounts" / (hashlib.sha256(os.fsencode(mountpoint)).hexdigest()[:16] + ".json")


def save(home: AgentHome, rec: MountRecord) -> None:
    write_private(_path(home, rec.mountpoint), json.dumps(asdict(rec)).encode())


def remove(home: AgentHome, mountpoint: str, pid: int | None = None) -> None:
    """Forget the record of `mountpoint` (only if it names `pid`, when given)."""
    rec = find(home, mountpoint)
    if rec is not None and (pid is None or rec.pid == pid):
        with contextlib.suppress(FileNotFoundError):
            _path(home, mountpoint).unlink()


def records(home: AgentHome) -> list[MountRecord]:
    out = []
    for p in sorted((home.root / "mounts").glob("*.json")):
        try:
            out.append(MountRecord(**json.loads(p.read_bytes())))
        except (OSError, ValueError, TypeError):
            continue  # a damaged record: nothing to act on
    return out


def find(home: AgentHome, mountpoint: str) -> MountRecord | None:
    return next((r for r in records(home) if r.mountpoint == mountpoint), None)


def alive(pid: int) -> bool:
    """Whether `pid` is a running safehold process (not a reused id of something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"safehold" in cmdline


def fuse_problem() -> str | None:
    """Why FUSE cannot work on this machine, or None."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (the fuse kernel module is not loaded)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    if ctypes.util.find_library("fuse3") is None:
        return "the libfuse3 library is not installed"
    return None


def _unescape(field: str) -> str:
    """Mount table fields escape space, tab, newline and backslash as octal."""
    return os.fsdecode(field.encode().decode("unicode_escape").encode("latin-1"))


def fs_type(mountpoint: str) -> str | None:
    """The type of the file system mounted exactly at `mountpoint`, or None."""
    try:
        lines = Path("/proc/self/mountinfo").read_text(errors="surrogateescape").splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) > 4 and _unescape(fields[4]) == mountpoint and right:
            found = right.split()[0]  # the last one mounted there is what is seen
    return found


def state(mountpoint: str) -> str:
    """FREE (nothing mounted), OURS (a safehold mount answering), DEAD (a FUSE mount whose process is gone:
    "Transport endpoint is not connected"), or MOUNTED (another file system)."""
    try:
        os.lstat(mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return DEAD
        return FREE
    kind = fs_type(mountpoint)
    if kind is None:
        return FREE
    return OURS if kind == FS_TYPE else MOUNTED


def fusermount(mountpoint: str, lazy: bool) -> str | None:
    """Unmount with fusermount3 -u (-z: lazily, once no one uses it); the error text on failure."""
    args = ["fusermount3", "-u", *(["-z"] if lazy else []), "--", mountpoint]
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if p.returncode == 0 else (p.stderr.strip() or f"fusermount3 exited with {p.returncode}")


def clean_dead(home: AgentHome, mountpoint: str) -> bool:
    """Detach a mount whose process died, and forget its record; True if there was one."""
    if state(mountpoint) != DEAD:
        rec = find(home, mountpoint)
        if rec is not None and not alive(rec.pid):
            remove(home, mountpoint)
        return False
    problem = fusermount(mountpoint, lazy=True)
    if problem is not None:
        raise_error("MountStale", detail=f"{mountpoint}: {problem}")
    remove(home, mountpoint)
    return True


def check_mountpoint(mountpoint: str) -> None:
    """A mount point must be an empty folder with nothing mounted on it."""
    st = state(mountpoint)
    if st in (OURS, MOUNTED):
        raise_error("MountPointUnusable", path=mountpoint,
                    reason="a file system is already mounted there" if st == MOUNTED
                    else "a recovery point is already mounted there")
    if not os.path.exists(mountpoint):
        raise_error("MountPointUnusable", path=mountpoint, reason="it does not exist")
    if not os.path.isdir(mountpoint):
        raise_error("MountPointUnusable", path=mountpoint, reason="it is not a folder")
    try:
        with os.scandir(mountpoint) as it:
            empty = not any(it)
    except PermissionError:
        empty = False
        raise_error("MountPointUnusable", path=mountpoint, reason="this user may not read it")
    if not empty:
        raise_error("MountPointUnusable", path=mountpoint, reason="it is not empty")
