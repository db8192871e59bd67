"""The FUSE binding of the mount (mfusepy on libfuse3): turns kernel requests into MountFS calls, and unmounts
itself after the idle timeout.

Holds no file-system logic: paths and names cross here between mfusepy's str (UTF-8, surrogateescape) and
the model's bytes.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import Any

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

import mfusepy

from safehold.agent import mounts
from safehold.agent.mountfs import MountFS

ENC = "utf-8"
CACHE_S = 3600.0  # recovery points never change: the kernel may keep attributes and names this long


def _b(path: str) -> bytes:
    return path.encode(ENC, "surrogateescape")


def _s(name: bytes) -> str:
    return name.decode(ENC, "surrogateescape")


class Operations(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, fs: MountFS, mountpoint: str, on_ready: Callable[[], None], check_every_s: float) -> None:
        self.fs = fs
        self.mountpoint = mountpoint
        self.on_ready = on_ready
        self.check_every_s = check_every_s
        self._stop = threading.Event()

    # ---- life cycle ------------------------------------------------------------------------------------

    def init(self, path: str) -> None:
        self.fs.idle.touch()
        if self.fs.idle.timeout_ns is not None:
            threading.Thread(target=self._watch, name="safehold-idle", daemon=True).start()
        self.on_ready()

    def destroy(self, path: str) -> None:
        self._stop.set()

    def _watch(self) -> None:
        """Unmount once idle for the timeout; the kernel then ends the FUSE session and the loop returns."""
        while not self._stop.wait(self.check_every_s):
            if self.fs.idle.expired():
                self.fs.log("idle timeout reached: unmounting")
                problem = mounts.fusermount(self.mountpoint, lazy=True)
                if problem is None:
                    return
                self.fs.log(f"unmount after idle timeout failed: {problem}")

    # ---- requests --------------------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        a = self.fs.getattr(_b(path))
        return {"st_ino": a.ino, "st_mode": a.mode, "st_nlink": a.nlink, "st_uid": a.uid, "st_gid": a.gid,
                "st_size": a.size, "st_blocks": a.blocks, "st_blksize": 131072, "st_rdev": a.rdev,
                "st_atime": a.atime_ns, "st_mtime": a.mtime_ns, "st_ctime": a.ctime_ns}

    def readdir(self, path: str, fh: int) -> list[Any]:
        return [(_s(name), {"st_mode": kind, "st_ino": ino}, 0) for name, kind, ino in self.fs.readdir(_b(path))]

    def readlink(self, path: str) -> str:
        return _s(self.fs.readlink(_b(path)))

    def listxattr(self, path: str) -> list[str]:
        return [_s(n) for n in self.fs.listxattr(_b(path))]

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return self.fs.getxattr(_b(path), _b(name))

    def open(self, path: str, flags: int) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise mfusepy.FuseOSError(errno.EROFS)
        return self.fs.open(_b(path))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.fs.read(fh, offset, size)

    def release(self, path: str, fh: int) -> int:
        self.fs.release(fh)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return self.fs.statfs()


def serve(fs: MountFS, mountpoint: str, on_ready: Callable[[], None], allow_other: bool = False) -> None:
    """Mount and serve until unmounted (fusermount3 -u, the idle timeout, SIGINT or SIGTERM)."""
    timeout = fs.idle.timeout_ns
    check_every = 30.0 if timeout is None else min(30.0, max(0.1, timeout / 1e9 / 10))
    ops = Operations(fs, mountpoint, on_ready, check_every)
    # nodev, nosuid: a device node or setuid program in a backup must not open a way into this machine
    options: dict[str, Any] = {"ro": True, "nodev": True, "nosuid": True, "fsname": "safehold",
                               "subtype": "safehold", "use_ino": True, "kernel_cache": True,
                               "attr_timeout": CACHE_S, "entry_timeout": CACHE_S}
    if allow_other:  # other users see the files, with the permissions they had at backup time
        options.update(allow_other=True, default_permissions=True)
    mfusepy.FUSE(ops, mountpoint, foreground=True, **options)
