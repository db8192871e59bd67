"""Content worker processes: small files opened, read, hashed and sealed beside the walk.

The walk is Python work per file, and so is reading, hashing and sealing a small file; threads would share one
GIL, so this work goes to processes forked at the start of a backup (before any thread starts). Each worker
gets batches of (token, path, device, inode) and answers with one `FileDone` per file, in order; a chunk it
already saw or the vault already held comes back without its sealed bytes. The parent decides what is new.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import stat
import time
from multiprocessing.connection import Connection

import msgspec

from safehold.agent import fsmeta
from safehold.agent.fileread import ChangedWhileRead, extents_of, open_for_read, read_small
from safehold.agent.known import KnownIds
from safehold.formats import chunks as chunkfmt
from safehold.formats.chunks import Sealer
from safehold.formats.keys import MachineKeys
from safehold.model import CHUNK_DATA

OK, FAILED, CHANGED, REPLACED = 0, 1, 2, 3
SOCKET_BUFFER = 4 * 1024 * 1024


class FileJob(msgspec.Struct, array_like=True):
    token: int
    path: bytes
    dev: int
    ino: int


class FileDone(msgspec.Struct, array_like=True):
    token: int
    status: int
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    read_start_ns: int = 0
    extents: list[tuple[int, int]] | None = None
    xattrs: list[tuple[bytes, bytes]] | None = None
    acl_access: bytes | None = None
    acl_default: bytes | None = None
    chunk: bytes | None = None  # None: an empty file
    sealed: bytes | None = None  # None: the chunk was known already
    errno: int = 0
    reason: str = ""


_enc = msgspec.msgpack.Encoder()
_jobs = msgspec.msgpack.Decoder(list[FileJob])
_dones = msgspec.msgpack.Decoder(list[FileDone])


def _one(job: FileJob, keys: MachineKeys, sealer: Sealer, known: KnownIds, seen: set[bytes]) -> FileDone:
    read_start = time.time_ns()
    try:
        fd = open_for_read(job.path)
    except OSError as exc:
        return FileDone(job.token, FAILED, errno=exc.errno or 0, reason=exc.strerror or str(exc))
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode) or (before.st_dev, before.st_ino) != (job.dev, job.ino):
            return FileDone(job.token, REPLACED, reason="the file was replaced while the folder was read")
        if before.st_size > chunkfmt.SMALL_FILE:
            return FileDone(job.token, CHANGED, reason="the file grew while the folder was read")
        xattrs, acl_a, acl_d = fsmeta.read_xattrs_fd(fd)
        extents = extents_of(fd, before) if before.st_size else None
        data = memoryview(read_small(fd, before, extents)) if before.st_size else None
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != \
                (before.st_size, before.st_mtime_ns, before.st_ctime_ns):
            return FileDone(job.token, CHANGED, reason="size or modification time changed during the read")
    except ChangedWhileRead as exc:
        return FileDone(job.token, CHANGED, reason=str(exc))
    except OSError as exc:
        return FileDone(job.token, FAILED, errno=exc.errno or 0, reason=exc.strerror or str(exc))
    finally:
        os.close(fd)
    cid = sealed = None
    if data is not None:
        cid = chunkfmt.chunk_id(keys, data)
        if cid not in seen and not (known.listed and cid in known):
            sealed = sealer.seal(CHUNK_DATA, cid, data)
            seen.add(cid)
    return FileDone(job.token, OK, before.st_size, before.st_mtime_ns, before.st_ctime_ns, read_start, extents,
                    xattrs, acl_a, acl_d, cid, sealed)


def _serve(conn: Connection, keys: MachineKeys, known: KnownIds) -> None:
    sealer = Sealer(keys)
    seen: set[bytes] = set()
    while True:
        try:
            jobs = _jobs.decode(conn.recv_bytes())
        except (EOFError, OSError):
            return  # the backup ended, or its process died
        conn.send_bytes(_enc.encode([_one(job, keys, sealer, known, seen) for job in jobs]))


class ContentPool:
    """`n` forked workers. `submit` sends a batch to the next worker in turn; `next_done` returns the answers of
    the oldest batch not yet collected. Create it before starting any thread: a fork copies only the caller."""

    def __init__(self, keys: MachineKeys, known: KnownIds, n: int) -> None:
        self._conns: list[Connection] = []
        self._pids: list[int] = []
        self._order: collections.deque[int] = collections.deque()
        self._turn = 0
        try:
            for _ in range(n):
                ours, theirs = socket.socketpair()
                for sock in (ours, theirs):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
                pid = os.fork()
                if pid == 0:  # the worker: never returns
                    code = 0
                    try:
                        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
                        signal.signal(signal.SIGTERM, signal.SIG_DFL)
                        ours.close()
                        for conn in self._conns:
                            conn.close()
                        _serve(Connection(theirs.detach()), keys, known)
                    except BaseException:
                        code = 1
                    finally:
                        os._exit(code)
                theirs.close()
                self._conns.append(Connection(ours.detach()))
                self._pids.append(pid)
        except BaseException:
            self.close()
            raise

    @property
    def outstanding(self) -> int:
        return len(self._order)

    def submit(self, jobs: list[FileJob]) -> None:
        i = self._turn
        self._turn = (i + 1) % len(self._conns)
        try:
            self._conns[i].send_bytes(_enc.encode(jobs))
        except OSError as exc:  # not a file's error: the worker is gone
            raise RuntimeError(f"a backup worker process ended unexpectedly ({exc})") from exc
        self._order.append(i)

    def next_done(self) -> list[FileDone]:
        i = self._order.popleft()
        try:
            return _dones.decode(self._conns[i].recv_bytes())
        except (EOFError, OSError) as exc:
            raise RuntimeError(f"a backup worker process ended unexpectedly ({exc or 'closed'})") from exc

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        for pid in self._pids:  # a worker may be in the middle of a batch nobody will collect
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
        self._conns, self._pids = [], []
        self._order.clear()
