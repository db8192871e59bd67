"""Reading one file's data for a backup: opening without following links, its data regions, and the checks
that it did not change while it was read. Shared by the walk and the content worker processes.
"""

from __future__ import annotations

import os

from safehold.agent import fsmeta

_O_NOATIME = getattr(os, "O_NOATIME", 0)
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK


class ChangedWhileRead(Exception):
    pass


def open_for_read(name: bytes, dir_fd: int | None = None) -> int:
    """Open a file for reading without following a symlink, without touching its access time when allowed."""
    try:
        return os.open(name, _FLAGS | _O_NOATIME, dir_fd=dir_fd)
    except PermissionError:  # O_NOATIME needs ownership of the file
        return os.open(name, _FLAGS, dir_fd=dir_fd)


class ExtentReader:
    """A file's data regions read in order as one stream (holes of sparse files are skipped)."""

    def __init__(self, fd: int, extents: list[tuple[int, int]]) -> None:
        self.fd = fd
        self.extents = extents
        self.i = 0
        self.pos = extents[0][0] if extents else 0

    def readinto(self, buf: memoryview) -> int:
        while self.i < len(self.extents):
            start, length = self.extents[self.i]
            left = start + length - self.pos
            if left <= 0:
                self.i += 1
                if self.i < len(self.extents):
                    self.pos = self.extents[self.i][0]
                continue
            n = os.preadv(self.fd, [buf[:min(len(buf), left)]], self.pos)
            if n == 0:
                raise ChangedWhileRead("the file became shorter while it was read")
            self.pos += n
            return n
        return 0


def read_full(reader: ExtentReader, view: memoryview) -> int:
    """Fill `view` from `reader`; fewer bytes than its length only at the end of the data."""
    got = 0
    while got < len(view):
        n = reader.readinto(view[got:])
        if n == 0:
            break
        got += n
    return got


def extents_of(fd: int, st: os.stat_result) -> list[tuple[int, int]] | None:
    """The data regions of a sparse file (fewer blocks than its size), None for a dense one."""
    return fsmeta.data_extents(fd, st.st_size) if st.st_blocks * 512 < st.st_size else None


def read_small(fd: int, st: os.stat_result, extents: list[tuple[int, int]] | None) -> bytes | bytearray:
    """All data of a file whose data fits one chunk, checked to end where `st` said."""
    if extents is None:  # dense: one read of a byte more than expected tells a grown file too
        data = os.pread(fd, st.st_size + 1, 0)
        if len(data) == st.st_size:
            return data
        if len(data) > st.st_size:
            raise ChangedWhileRead("the file grew while it was read")
        # shorter: a short read is allowed to happen, so read it out in full below before deciding
    reader = ExtentReader(fd, extents if extents is not None else [(0, st.st_size)])
    data_len = sum(n for _, n in extents) if extents is not None else st.st_size
    buf = bytearray(data_len)
    if read_full(reader, memoryview(buf)) != data_len:
        raise ChangedWhileRead("the file became shorter while it was read")
    if reader.readinto(memoryview(bytearray(1))) != 0:
        raise ChangedWhileRead("the file grew while it was read")
    return buf
