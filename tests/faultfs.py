"""A tiny read-only FUSE file system whose files fail to read in chosen ways, for provoking real I/O errors.

Run as `python faultfs.py MOUNTPOINT`; it prints "ready" once mounted and serves until unmounted.
Files: good.txt reads fine; broken.bin fails with EIO (a bad disk); offline.doc fails with EREMOTEIO
(a placeholder whose data lives elsewhere).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from typing import Any

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

import mfusepy

FILES = {"good.txt": (b"all good\n", 0), "broken.bin": (b"x" * 5000, errno.EIO),
         "offline.doc": (b"y" * 300, errno.EREMOTEIO)}
NOW = time.time_ns()


class FaultFS(mfusepy.Operations):
    use_ns = True

    def init(self, path: str) -> None:  # type: ignore[override]
        print("ready", flush=True)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_mtime": NOW, "st_ctime": NOW}
        entry = FILES.get(path[1:])
        if entry is None:
            raise mfusepy.FuseOSError(errno.ENOENT)
        return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": len(entry[0]),
                "st_mtime": NOW, "st_ctime": NOW, "st_blocks": (len(entry[0]) + 511) // 512}

    def readdir(self, path: str, fh: int) -> list[str]:  # type: ignore[override]
        return [".", "..", *FILES]

    def open(self, path: str, flags: int) -> int:
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        data, err = FILES[path[1:]]
        if err:
            raise mfusepy.FuseOSError(err)
        return data[offset:offset + size]


if __name__ == "__main__":
    mfusepy.FUSE(FaultFS(), sys.argv[1], foreground=True, ro=True, nothreads=True)
