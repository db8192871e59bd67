"""The file system `safehold mount` shows: one recovery point, or every one as a dated folder, read-only, with
lookups by path, attributes, links, xattrs and file reads mapped onto verified chunks.

Knows nothing of FUSE (agent/fuse_adapter.py serves it). Failures are OSError with an errno, as a kernel
file system reports them; data that fails verification is EIO, never wrong bytes.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from safehold.agent import fsmeta
from safehold.agent.chunkcache import ChunkCache
from safehold.agent.reader import ChunkReader
from safehold.errors import SafeholdError
from safehold.formats import tree
from safehold.formats.tree import Entry
from safehold.model import RecoveryPoint
from safehold.ports import Clock

READ_AHEAD_CHUNKS = 6  # about 6 MiB ahead of a sequential reader (chunks average 1 MiB)
TREE_CACHE_ENTRIES = 200_000  # entries of decoded folders kept, summed over folders
FILE_CACHE = 256  # files whose chunk offsets are kept after they are closed
POINTS_REFRESH_NS = 30 * 10**9  # the dated folders are listed again at most this often
ACL_ACCESS = fsmeta.ACL_ACCESS
ACL_DEFAULT = fsmeta.ACL_DEFAULT


def folder_name(rp: RecoveryPoint) -> bytes:
    """`2026-12-03T17-20-05_844dbce0`: the point's local time (sortable) and the start of its id."""
    when = time.strftime("%Y-%m-%dT%H-%M-%S", time.localtime(rp.created_ns / 1e9))
    return f"{when}_{rp.rp_id[:8]}".encode()


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclass(frozen=True)
class Attr:
    ino: int
    mode: int  # file type and permission bits, as st_mode
    nlink: int
    uid: int
    gid: int
    size: int
    blocks: int  # 512-byte blocks holding data (holes of sparse files take none)
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    rdev: int


class IdleTimer:
    """When the file system was last used, on an injected clock; `expired()` says whether it has been idle
    for the timeout (None: never)."""

    def __init__(self, clock: Clock, timeout_ns: int | None) -> None:
        self.clock = clock
        self.timeout_ns = timeout_ns
        self.last_ns = clock.now_ns()

    def touch(self) -> None:
        self.last_ns = self.clock.now_ns()

    def expired(self) -> bool:
        return self.timeout_ns is not None and self.clock.now_ns() - self.last_ns >= self.timeout_ns


class FileData:
    """A file's bytes: logical offsets through its sparse extents to offsets in its data, and those to chunks
    by bisecting cumulative chunk ends. Ends are learned as chunks are read (trees keep chunk ids, not
    sizes), so a first read far into a file reads the chunks before it once."""

    def __init__(self, entry: Entry, cache: ChunkCache) -> None:
        self.entry = entry
        self.cache = cache
        self.chunks = entry.chunks or []
        self.extents = entry.extents if entry.extents is not None else ([(0, entry.size)] if entry.size else [])
        self.ext_starts = [s for s, _ in self.extents]
        self.data_starts: list[int] = []  # offset in the data of each extent's first byte
        pos = 0
        for _, n in self.extents:
            self.data_starts.append(pos)
            pos += n
        self.data_size = pos
        self.ends: list[int] = []  # end offset in the data of chunk i, for the chunks whose size is known
        self._lock = threading.Lock()

    def _chunk(self, i: int) -> bytes:
        data = self.cache.get(self.chunks[i])
        with self._lock:
            if i == len(self.ends):
                self.ends.append((self.ends[-1] if self.ends else 0) + len(data))
                if i == len(self.chunks) - 1 and self.ends[-1] != self.data_size:
                    raise _err(errno.EIO)  # the chunks do not add up to the recorded size
        return data

    def _index(self, pos: int) -> int:
        """The chunk holding data offset `pos`, learning chunk sizes up to it."""
        while not self.ends or self.ends[-1] <= pos:
            nxt = len(self.ends)
            if nxt >= len(self.chunks):
                raise _err(errno.EIO)  # data shorter than recorded
            self.cache.prefetch(self.chunks[nxt:nxt + READ_AHEAD_CHUNKS])
            self._chunk(nxt)
        return bisect.bisect_right(self.ends, pos)

    def _data(self, pos: int, n: int) -> bytes:
        """`n` bytes of the data stream from `pos`."""
        out: list[bytes] = []
        last = -1
        while n > 0:
            i = self._index(pos)
            start = self.ends[i - 1] if i else 0
            piece = self._chunk(i)[pos - start:pos - start + n]
            out.append(piece)
            pos += len(piece)
            n -= len(piece)
            last = i
        if last >= 0:
            self.cache.prefetch(self.chunks[last + 1:last + 1 + READ_AHEAD_CHUNKS])
        return b"".join(out)

    def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.entry.size)
        out: list[bytes] = []
        pos = offset
        while pos < end:
            k = bisect.bisect_right(self.ext_starts, pos) - 1
            if k >= 0 and pos < self.extents[k][0] + self.extents[k][1]:
                ext_start, ext_len = self.extents[k]
                n = min(end, ext_start + ext_len) - pos
                out.append(self._data(self.data_starts[k] + pos - ext_start, n))
            else:  # a hole, up to the next extent or the end
                nxt = self.ext_starts[k + 1] if k + 1 < len(self.extents) else end
                n = min(end, nxt) - pos
                out.append(bytes(n))
            pos += n
        return b"".join(out)


@dataclass(frozen=True)
class Node:
    entry: Entry
    point: int  # index of its recovery point; -1 for the top folder of a mount of all points
    rel: bytes  # path inside the recovery point


class MountFS:
    """Recovery points as a read-only tree. `points` are the recovery points shown: with `single` the mount's
    root is that one point's root, else each point is a dated folder (`folder_name`). `refresh`, when
    given, lists the points again (new backups appear, expired ones go) when the top folder is read.
    Paths are bytes, relative to the mount's root, with a leading '/'. Every call counts as use for `idle`.
    """

    def __init__(self, reader: ChunkReader, points: list[RecoveryPoint], single: bool, clock: Clock,
                 idle_timeout_ns: int | None = None,
                 refresh: Callable[[], list[RecoveryPoint]] | None = None,
                 log: Callable[[str], None] | None = None, cache: ChunkCache | None = None) -> None:
        self.reader = reader
        self.single = single
        self.clock = clock
        self.idle = IdleTimer(clock, idle_timeout_ns)
        self.refresh = refresh
        self.log = log or (lambda _text: None)
        self.cache = cache or ChunkCache(reader)
        self.uid, self.gid = os.getuid(), os.getgid()
        self._lock = threading.Lock()
        self._trees: OrderedDict[bytes, dict[bytes, Entry]] = OrderedDict()
        self._tree_entries = 0
        self._files: OrderedDict[tuple[int, bytes], FileData] = OrderedDict()
        self._handles: dict[int, FileData] = {}
        self._next_fh = 1
        self._points: list[RecoveryPoint] = []
        self._by_name: dict[bytes, int] = {}
        self._listed_ns = 0
        self._set_points(points)
        self._listed_ns = clock.now_ns()

    def close(self) -> None:
        self.cache.close()

    # ---- recovery points -------------------------------------------------------------------------------

    def _set_points(self, points: list[RecoveryPoint]) -> None:
        with self._lock:
            known = {rp.rp_id: i for i, rp in enumerate(self._points)}
            for rp in points:  # indexes stay stable: inode numbers and cached files depend on them
                if rp.rp_id not in known:
                    known[rp.rp_id] = len(self._points)
                    self._points.append(rp)
            self._by_name = {folder_name(rp): known[rp.rp_id] for rp in points}

    def _maybe_refresh(self) -> None:
        if self.single or self.refresh is None or self.clock.now_ns() - self._listed_ns < POINTS_REFRESH_NS:
            return
        self._listed_ns = self.clock.now_ns()
        try:
            with self.cache.vault_lock:  # the vault client is shared with the chunk reads
                fresh = self.refresh()
            self._set_points(fresh)
        except SafeholdError as exc:  # the vault is out of reach: keep showing what was listed
            self.log(f"listing recovery points failed: {exc}")

    # ---- trees -----------------------------------------------------------------------------------------

    def _children(self, tid: bytes) -> dict[bytes, Entry]:
        with self._lock:
            found = self._trees.get(tid)
            if found is not None:
                self._trees.move_to_end(tid)
                return found
        with self.cache.vault_lock:  # the reader's windows and location cache are not for threads
            try:
                entries = self.reader.tree(tid)
            except SafeholdError as exc:
                self.log(f"folder tree {tid.hex()[:16]}: {exc}")
                raise _err(errno.EIO) from exc
        found = {e.name: e for e in entries}
        with self._lock:
            self._trees[tid] = found
            self._tree_entries += len(found)
            while self._tree_entries > TREE_CACHE_ENTRIES and len(self._trees) > 1:
                _, old = self._trees.popitem(last=False)
                self._tree_entries -= len(old)
        return found

    def _top(self) -> Entry:
        return Entry(name=b"/", type=tree.DIR, mode=0o555, uid=self.uid, gid=self.gid,
                     mtime_ns=self._points[-1].created_ns if self._points else 0,
                     subtree=self._points[0].root if self.single and self._points else None)

    def _point_dir(self, i: int) -> Entry:
        rp = self._points[i]
        return Entry(name=folder_name(rp), type=tree.DIR, mode=0o555, uid=self.uid, gid=self.gid,
                     mtime_ns=rp.created_ns, subtree=rp.root)

    def node(self, path: bytes) -> Node:
        self.idle.touch()
        parts = [p for p in path.split(b"/") if p]
        point, entry = (0, self._top()) if self.single else (-1, self._top())
        rel: list[bytes] = []
        if not self.single and parts:
            self._maybe_refresh()
            i = self._by_name.get(parts[0])
            if i is None:
                raise _err(errno.ENOENT)
            point, entry = i, self._point_dir(i)
            parts = parts[1:]
        for p in parts:
            if entry.type != tree.DIR:
                raise _err(errno.ENOTDIR)
            found = self._children(entry.subtree).get(p) if entry.subtree else None
            if found is None:
                raise _err(errno.ENOENT)
            entry = found
            rel.append(p)
        return Node(entry, point, b"/".join(rel))

    # ---- what the kernel asks --------------------------------------------------------------------------

    def _ino(self, node: Node) -> int:
        """Stable inode numbers; members of one hard-link group share theirs, so `cp -a` keeps the links."""
        e = node.entry
        key = b"L%d:%d" % (node.point, e.link_id) if e.link_id and e.type != tree.DIR else \
            b"P%d:" % node.point + node.rel
        if node.point < 0 or (self.single and not node.rel):
            return 1
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") | 2

    def getattr(self, path: bytes) -> Attr:
        node = self.node(path)
        e = node.entry
        if e.type == tree.FILE:
            stored = sum(n for _, n in e.extents) if e.extents is not None else e.size
            blocks = (stored + 511) // 512
        else:
            blocks = (e.size + 511) // 512 if e.type == tree.SYMLINK else 0
        size = len(e.target or b"") if e.type == tree.SYMLINK else e.size
        nlink = e.nlink if e.type != tree.DIR else max(e.nlink, 1)
        if node.point < 0 or (self.single and not node.rel):
            nlink = 2
        return Attr(ino=self._ino(node), mode=fsmeta.IFMT_OF[e.type] | e.mode, nlink=nlink, uid=e.uid,
                    gid=e.gid, size=size, blocks=blocks, atime_ns=e.atime_ns or e.mtime_ns, mtime_ns=e.mtime_ns,
                    ctime_ns=e.ctime_ns or e.mtime_ns, rdev=e.rdev or 0)

    def readdir(self, path: bytes) -> list[tuple[bytes, int, int]]:
        """(name, file type as st_mode's S_IFMT bits, inode number) of a folder's items, '.' and '..' first.
        Inode numbers matter here: readdir(3) skips entries whose d_ino is 0."""
        node = self.node(path)
        if node.entry.type != tree.DIR:
            raise _err(errno.ENOTDIR)
        here = self._ino(node)
        out = [(b".", stat.S_IFDIR, here), (b"..", stat.S_IFDIR, 1 if node.point < 0 or not node.rel else here)]
        if node.point < 0:
            self._maybe_refresh()
            with self._lock:
                names = sorted(self._by_name.items())
            return out + [(name, stat.S_IFDIR, self._ino(Node(self._point_dir(i), i, b""))) for name, i in names]
        if not node.entry.subtree:
            return out
        prefix = node.rel + b"/" if node.rel else b""
        return out + [(name, fsmeta.IFMT_OF[e.type], self._ino(Node(e, node.point, prefix + name)))
                      for name, e in self._children(node.entry.subtree).items()]

    def readlink(self, path: bytes) -> bytes:
        e = self.node(path).entry
        if e.type != tree.SYMLINK:
            raise _err(errno.EINVAL)
        return e.target or b""

    def _xattrs(self, e: Entry) -> dict[bytes, bytes]:
        found = dict(e.xattrs or [])
        if e.acl_access is not None:
            found[ACL_ACCESS] = e.acl_access
        if e.acl_default is not None:
            found[ACL_DEFAULT] = e.acl_default
        return found

    def listxattr(self, path: bytes) -> list[bytes]:
        return sorted(self._xattrs(self.node(path).entry))

    def getxattr(self, path: bytes, name: bytes) -> bytes:
        value = self._xattrs(self.node(path).entry).get(name)
        if value is None:
            raise _err(errno.ENODATA)
        return value

    def open(self, path: bytes) -> int:
        node = self.node(path)
        if node.entry.type == tree.DIR:
            raise _err(errno.EISDIR)
        if node.entry.type != tree.FILE:
            raise _err(errno.ENXIO)  # devices and FIFOs of a backup are shown, not served
        key = (node.point, node.rel)
        if node.entry.chunks:
            with self.cache.vault_lock:  # one catalog query for every chunk of the file, not one each
                try:
                    self.reader.preload(node.entry.chunks)
                except SafeholdError as exc:
                    self.log(f"open of {node.entry.name!r}: {exc}")
                    raise _err(errno.EIO) from exc
        with self._lock:
            data = self._files.get(key)
            if data is None or data.entry.chunks != node.entry.chunks:
                data = FileData(node.entry, self.cache)
            self._files[key] = data
            self._files.move_to_end(key)
            while len(self._files) > FILE_CACHE:
                self._files.popitem(last=False)
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = data
        return fh

    def read(self, fh: int, offset: int, size: int) -> bytes:
        self.idle.touch()
        data = self._handles.get(fh)
        if data is None:
            raise _err(errno.EBADF)
        try:
            return data.read(offset, size)
        except SafeholdError as exc:
            self.log(f"read of {data.entry.name!r} at {offset}: {exc}")
            raise _err(errno.EIO) from exc

    def release(self, fh: int) -> None:
        with self._lock:
            self._handles.pop(fh, None)

    def statfs(self) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 0, "f_bfree": 0, "f_bavail": 0,
                "f_files": 0, "f_ffree": 0, "f_namemax": 255}
