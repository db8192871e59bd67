"""The backup engine: walk, chunk, deduplicate, seal, pack, upload and commit one recovery point.

It receives its vault, keys and checksum store; it never prints. Per-file content work (read, cut, hash,
seal) depends only on the file, the keys and the set of known ids, so it can move to worker processes.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import os
import queue
import signal
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import msgspec

from safehold.agent import fsmeta, workers
from safehold.agent.checksums import ChecksumStore, FileRow, FileState
from safehold.agent.events import EventSink, ItemFailed, Notice, Progress, ProgressClock
from safehold.agent.fileread import (
    ChangedWhileRead,
    ExtentReader,
    extents_of,
    open_for_read,
    read_full,
    read_small,
)
from safehold.agent.known import KnownIds
from safehold.agent.reader import ChunkReader
from safehold.agent.refs import RefLog
from safehold.agent.workers import ContentPool, FileDone, FileJob
from safehold.errors import raise_error
from safehold.formats import chunks as chunkfmt
from safehold.formats import tree
from safehold.formats.chunks import Sealer
from safehold.formats.keys import MachineKeys
from safehold.formats.pack import PackBuilder
from safehold.formats.tree import Entry
from safehold.formats.wire import MAX_PACK_ENTRIES
from safehold.model import (
    CHUNK_DATA,
    CHUNK_TREE,
    BackupStats,
    ChunkId,
    JobStatus,
    MachineId,
    PackEntry,
    PackId,
    RecoveryPoint,
)
from safehold.ports import VaultClient

# A backup holds several packs' worth of memory at its peak (the pack being filled and joined, the one being
# sent, the vault's copy): 8 MiB packs made the mixed tree's first backup peak at 149-157 MiB instead of
# 194-206 MiB with 16 MiB packs, at the same speed (3 alternating runs each).
PACK_TARGET = 4 * 1024 * 1024  # a smaller pack holds less in flight: 3 packs of 8 MiB raised the peak by about 10 MiB
META_KIND = 3
META_ID = b"\0" * 32
# A file whose ctime is within this window of the moment its read began could change again
# within the same timestamp tick (coarse kernel clocks: up to 10 ms) without its stat changing; such a
# file is read again next time instead of being trusted from the checksum store, as git does.
RACY_NS = 100 * 10**6
READ_BLOCK = 2 * 1024 * 1024  # large files are read and cut in blocks of this size
BATCH_FILES = 64  # small files handed to a content worker at once ...
BATCH_BYTES = 2 * 1024 * 1024  # ... or this much of their data
MAX_WORKERS = 4
WINDOW_PER_WORKER = 2  # batches a worker may have waiting: enough to keep it busy, few entries held
FEW_ROWS = 16  # items of a changed folder looked up one by one in the checksum store; more: the folder's rows


_sig_enc = msgspec.msgpack.Encoder()
_tree_dec = msgspec.msgpack.Decoder(tree.Tree)


Item: TypeAlias = tuple[bytes, int, int, int, int, int, int, int, int, int]
_items_dec = msgspec.msgpack.Decoder(list[Item])


def _items(kept: list[tuple[bytes, os.stat_result]]) -> tuple[list[Item], bool]:
    """What the walk saw of each item in a folder, as its checksum-store record keeps it (docs/format.md), and
    whether the folder may be recorded: not when a file in it has several links or an item changed too
    recently to trust."""
    horizon = time.time_ns() - RACY_NS
    rows: list[Item] = []
    recordable = True
    for name, st in kept:
        if st.st_ctime_ns > horizon or (st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode)):
            recordable = False
        rows.append((name, st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                     st.st_uid, st.st_gid, st.st_rdev))
    return rows, recordable


def _same_item(was: Item, now: Item) -> bool:
    """The item looks as recorded. The device number is left out: it may change across reboots (network and
    some volume-managed file systems), and a file's checksum-store row never included it; inode, times and
    size still have to match."""
    return was == now or (was[:3] == now[:3] and was[4:] == now[4:])


def _prior(data: bytes, items: bytes | None) -> dict[bytes, tuple[Item, Entry]] | None:
    """A folder record's entries by name, each with what the walk saw of its item then; None when the record
    has no items (written before they were kept) or does not decode."""
    if items is None:
        return None
    try:
        entries, rows = _tree_dec.decode(data).entries, _items_dec.decode(items)
    except msgspec.DecodeError:
        return None
    if len(entries) != len(rows) or any(e.name != r[0] for e, r in zip(entries, rows, strict=True)):
        return None
    return {r[0]: (r, e) for e, r in zip(entries, rows, strict=True)}


# Path components leading to the backed-up targets; None marks a target (everything below it).
Trie: TypeAlias = dict[bytes, "Trie | None"]


class _Folder:
    """A folder being walked: its entries, and how many of them still wait for a worker or a subfolder."""

    __slots__ = ("cid", "closed", "entries", "entry", "expected", "items", "parent", "path", "rows", "sig",
                 "waiting")

    def __init__(self, parent: _Folder | None, entry: Entry | None, path: bytes = b"") -> None:
        self.entries: list[Entry | None] = []
        self.waiting = 0
        self.closed = False
        self.parent = parent
        self.entry = entry  # the parent's entry whose subtree this folder is
        self.cid: ChunkId | None = None
        self.path = path
        self.sig: bytes | None = None  # the signature to record with its tree (None: record none)
        self.items = b""  # what the walk saw of each item, recorded with the tree
        self.expected = 0  # items the walk kept: the tree is recorded only if every one has its entry
        # checksum-store rows of files read in it, written only if its record is not (the record holds them)
        self.rows: list[tuple[bytes, FileState]] = []


@dataclass
class Counters:
    files: int = 0
    dirs: int = 0
    other: int = 0
    bytes_scanned: int = 0
    bytes_read: int = 0
    chunks_new: int = 0
    bytes_new_stored: int = 0
    packs_uploaded: int = 0


@dataclass(frozen=True)
class BackupResult:
    job_id: str
    recovery_point: RecoveryPoint
    failed: list[ItemFailed] = field(default_factory=list)

    @property
    def status(self) -> JobStatus:
        return self.recovery_point.status


class RecoveryPointMeta(msgspec.Struct):
    hostname: str
    paths: list[bytes]
    job_id: str
    started_ns: int
    root: bytes  # binds the sealed metadata to its tree: a catalog row pointing elsewhere is detected


def seal_meta(sealer: Sealer, meta: RecoveryPointMeta) -> bytes:
    return sealer.seal(META_KIND, META_ID, msgspec.msgpack.encode(meta))


def open_meta(sealer: Sealer, rp: RecoveryPoint) -> RecoveryPointMeta:
    """The sealed metadata of a recovery point, checked to belong to the tree the catalog names."""
    try:
        meta = msgspec.msgpack.decode(sealer.open(META_KIND, META_ID, rp.sealed_meta, verify_id=False),
                                      type=RecoveryPointMeta)
    except msgspec.DecodeError as exc:
        raise_error("IntegrityError", what=f"recovery point {rp.rp_id[:8]} metadata: {exc}")
    if meta.root != rp.root:
        raise_error("IntegrityError", what=f"recovery point {rp.rp_id[:8]} names a tree its metadata does not")
    return meta


class Uploader:
    """The one place where chunks become packs and packs go to the vault.

    `add` runs in the backup thread: it checks the id against what the vault holds and what this job already
    queued (dedup before compression, so a known chunk is never compressed), then queues the plaintext in
    batches. A seal thread compresses and encrypts (zstd releases the GIL, so it runs beside the walk and the
    reads on a second core) and fills the data and tree packs; an upload thread sends full packs (the GIL is
    free during network and disk writes). Queued plaintext is bounded by `QUEUED_BYTES`, finished packs by
    `IN_FLIGHT`. Each id is queued once: `known` is only touched by the backup thread.
    """

    IN_FLIGHT = 1
    BATCH_BYTES = 2 * 1024 * 1024  # plaintext handed to the seal thread at once: one lock round per batch
    BATCH_ITEMS = 512
    QUEUED_BYTES = 4 * 1024 * 1024

    def __init__(self, vault: VaultClient, machine_id: MachineId, session: str, sealer: Sealer,
                 known: KnownIds, counters: Counters) -> None:
        self.vault, self.machine_id, self.session, self.sealer = vault, machine_id, session, sealer
        self.known = known
        self._added = known.added  # asked first: a plain set lookup, and on a first backup the only one
        self.counters = counters
        # Buffers of stored packs, handed back by the upload thread for the next data packs: a few buffers
        # serve the whole backup (at most: one being filled, IN_FLIGHT queued, one being sent).
        self._spare: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._packs = {CHUNK_DATA: self._data_pack(), CHUNK_TREE: PackBuilder()}
        self._batch: list[tuple[int, ChunkId, bytes | memoryview, bool]] = []  # (kind, id, data, sealed)
        self._batch_bytes = 0
        self._seal_q: queue.Queue[list[tuple[int, ChunkId, bytes | memoryview, bool]] | None] = queue.Queue(
            max(2, self.QUEUED_BYTES // self.BATCH_BYTES))
        self._queue: queue.Queue[tuple[PackId, memoryview, list[PackEntry], bytearray] | None] = \
            queue.Queue(self.IN_FLIGHT)
        self._error: BaseException | None = None
        self._dropped = False  # the job failed: what is still queued is neither sealed nor sent
        self._sealing = threading.Thread(target=self._seal, name="seal", daemon=True)
        self._thread = threading.Thread(target=self._send, name="upload", daemon=True)
        self._sealing.start()
        self._thread.start()

    def add(self, kind: int, cid: ChunkId, data: bytes | memoryview, owned: bool = False) -> None:
        """Queue a chunk unless known; `owned`: nobody writes to `data`'s buffer again, so it needs no copy."""
        if cid in self._added or (self.known.listed and cid in self.known):
            return
        self._added.add(cid)
        self.counters.chunks_new += 1
        # the seal thread reads this later: a buffer that may be reused is copied
        self._batch.append((kind, cid, data if owned or isinstance(data, bytes) else bytes(data), False))
        self._batch_bytes += len(data)
        if self._batch_bytes >= self.BATCH_BYTES or len(self._batch) >= self.BATCH_ITEMS:
            self._hand_over()

    def add_sealed(self, cid: ChunkId, sealed: bytes | None, plain_len: int) -> None:
        """A chunk a content worker read and sealed; None when the worker knew it was not new."""
        if cid in self._added or (self.known.listed and cid in self.known):
            return
        if sealed is None:
            raise RuntimeError("a content worker left out the data of a new chunk")
        self._added.add(cid)
        self.counters.chunks_new += 1
        self._batch.append((CHUNK_DATA, cid, sealed, True))
        self._batch_bytes += plain_len
        if self._batch_bytes >= self.BATCH_BYTES or len(self._batch) >= self.BATCH_ITEMS:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._batch:
            self._check()
            self._seal_q.put(self._batch)
            self._batch, self._batch_bytes = [], 0

    def _seal(self) -> None:
        while (batch := self._seal_q.get()) is not None:
            if self._error is not None or self._dropped:
                continue  # drain: after a failure nothing more is sealed
            try:
                for kind, cid, data, sealed in batch:
                    builder = self._packs[kind]
                    self.counters.bytes_new_stored += builder.add(cid, kind, data) if sealed \
                        else builder.seal_in(cid, kind, data, self.sealer)
                    if len(builder) >= PACK_TARGET or len(builder.entries) >= MAX_PACK_ENTRIES:
                        self._finish_pack(kind)
            except BaseException as exc:  # handed to the backup thread, which raises it
                self._error = exc
        if self._error is None and not self._dropped:
            try:
                self._finish_pack(CHUNK_DATA)
                self._finish_pack(CHUNK_TREE)
            except BaseException as exc:
                self._error = exc
        self._queue.put(None)

    def _data_pack(self) -> PackBuilder:
        try:
            return PackBuilder(self._spare.get_nowait(), hint=PACK_TARGET)
        except queue.Empty:
            return PackBuilder(hint=PACK_TARGET)  # grows as chunks come: a small backup touches little memory

    def _finish_pack(self, kind: int) -> None:
        builder = self._packs[kind]
        if builder.entries:
            self._queue.put((*builder.finish(self.sealer), builder.buffer))
            self._packs[kind] = self._data_pack() if kind == CHUNK_DATA else PackBuilder()

    def _send(self) -> None:
        while (item := self._queue.get()) is not None:
            pack_id, data, entries, buf = item
            item = None
            if self._error is not None or self._dropped:
                continue  # drain: after a failure nothing more is sent
            try:
                self.vault.put_pack(self.machine_id, self.session, pack_id, data, entries)
                self.counters.packs_uploaded += 1
            except BaseException as exc:  # handed to the backup thread, which raises it
                self._error = exc
                continue
            with contextlib.suppress(BufferError):  # still seen by the vault: the buffer is left to it
                data.release()
                if not _in_use(buf):  # nobody sees it any more: the next data pack may fill it
                    self._spare.put(buf)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def flush(self) -> None:
        """Seal and send what is left and wait until the vault holds every pack."""
        self._hand_over()
        self.close()
        self._check()

    def close(self, drop: bool = False) -> None:
        """Stop both threads once what was handed over is sealed and sent; with `drop`, what waits is dropped."""
        self._dropped = self._dropped or drop
        if self._sealing.is_alive():
            self._seal_q.put(None)
            self._sealing.join()
        self._thread.join()


def _in_use(buf: bytearray) -> bool:
    """Whether some view of `buf` is still alive (a buffer seen through a view cannot be resized)."""
    try:
        buf.append(buf.pop())  # shrinking by a byte and back: no reallocation, and BufferError while in view
    except BufferError:
        return True
    return False


def _code_for(exc: OSError, is_dir: bool = False) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "FileAccessDenied"
    if exc.errno == errno.ENOENT:
        return "PathNotFound" if is_dir else "FileNotFound"
    if exc.errno == errno.ENOTDIR:
        return "PathNotFound"
    if exc.errno in (errno.EIO, errno.EBADMSG, errno.EUCLEAN):
        return "FileCorruptOrUnreadable"
    if exc.errno in (errno.EBUSY, errno.ETXTBSY, errno.EAGAIN):
        return "FileLocked"
    if exc.errno in (errno.ENXIO, errno.ENOMEDIUM, errno.EREMOTEIO, errno.ETIMEDOUT, errno.EHOSTDOWN):
        return "FileOffline"
    return "FileReadError"


class BackupEngine:
    def __init__(self, vault: VaultClient, machine_id: MachineId, keys: MachineKeys, store: ChecksumStore,
                 events: EventSink, excludes: Iterable[str] = (), skip_dirs: Iterable[str] = (),
                 hostname: str = "", workers: int | None = None) -> None:
        """`workers`: content worker processes for small files; None: one per core, none on one core."""
        self.vault = vault
        self.machine_id = machine_id
        self.keys = keys
        self.store = store
        self.events = events
        self.excludes = [os.fsencode(p) for p in excludes]
        self.hostname = hostname
        self.sealer = Sealer(keys)
        self.cdc = chunkfmt.chunker(keys)
        self.counters = Counters()
        self.failed: list[ItemFailed] = []
        self.refs = RefLog()
        self._skip: set[tuple[int, int]] = set()
        for d in skip_dirs:
            try:
                st = os.stat(d)
                self._skip.add((st.st_dev, st.st_ino))
            except OSError:
                pass
        self._pseudo = fsmeta.pseudo_fs_devices()
        self._links: dict[tuple[int, int], tuple[int, list[bytes], list[tuple[int, int]] | None]] = {}
        self._total: int | None = None
        self._scan: tuple[int, int] | None = None  # (pid, pipe) of the process sizing a first backup
        self._done = 0  # bytes of file content processed so far (read, or skipped as unchanged)
        self._clock = ProgressClock()
        cores = os.cpu_count() or 1
        self.workers = (min(cores, MAX_WORKERS) if cores > 1 else 0) if workers is None else workers
        self.pool: ContentPool | None = None
        self._epoch: int | None = None  # the vault's chunk epoch when this job began (docs/retention.md)
        self._jobs: list[FileJob] = []
        self._jobs_bytes = 0
        self._waiting: dict[int, tuple[_Folder, int, Entry, bytes, os.stat_result]] = {}
        self._tokens = 0

    # ---- top level --------------------------------------------------------------------------------

    def run(self, paths: list[str], previous: RecoveryPoint | None = None, job_id: str | None = None,
            keep_until_ns: int | None = None) -> BackupResult:
        targets = self._targets(paths)
        job_id = job_id or uuid.uuid4().hex
        started = time.time_ns()
        if previous is not None:
            self._total = previous.stats.bytes_scanned or None
            if self.store.empty:
                self._rebuild_store(previous)
        # The session first, then the chunks it may count on: housekeeping keeps every chunk a session that
        # began before the chunk was condemned may use, and leaves condemned chunks out of known_chunks.
        session = self.vault.begin_session(self.machine_id)
        # Read before the ids: a folder record stamped with this epoch holds chunks that were all there at some
        # moment after it was read, so while the vault's epoch stays the same they still are.
        self._epoch = self.vault.chunk_epoch(self.machine_id)
        known = KnownIds(self.vault.known_chunks(self.machine_id))
        # The content workers are forked first, while this is the only thread; so is the process that sizes a
        # first backup for the ETA (a thread walking beside the walk would compete for the GIL).
        self.pool = ContentPool(self.keys, known, self.workers) if self.workers else None
        try:
            if previous is None:
                self._start_scan(targets)
            return self._run(targets, previous, job_id, started, keep_until_ns, session, known)
        finally:
            self._stop_scan()
            if self.pool is not None:
                self.pool.close()

    def _run(self, targets: list[bytes], previous: RecoveryPoint | None, job_id: str, started: int,
             keep_until_ns: int | None, session: str, known: KnownIds) -> BackupResult:
        self.up = Uploader(self.vault, self.machine_id, session, self.sealer, known, self.counters)
        try:
            root = self._trie_tree(b"", self._trie(targets))
            self.up.flush()
            known.clear()  # every chunk is queued and sent: the commit's peak need not hold the vault's index too
            c = self.counters
            stats = BackupStats(
                files=c.files, dirs=c.dirs, other=c.other, bytes_scanned=c.bytes_scanned, bytes_read=c.bytes_read,
                chunks_new=c.chunks_new, bytes_new_stored=c.bytes_new_stored, packs_uploaded=c.packs_uploaded,
                failed_files=len(self.failed), duration_s=round(self._clock.elapsed(), 3))
            meta = RecoveryPointMeta(self.hostname, targets, job_id, started, root)
            status = JobStatus.WARNINGS if self.failed else JobStatus.COMPLETED
            refs = self.refs.packed()
            rp = self.vault.commit(self.machine_id, session, root, status, stats, refs,
                                   seal_meta(self.sealer, meta), keep_until_ns)
        except BaseException:
            self.up.close(drop=True)  # no upload may land after the session is gone
            self.vault.abort_session(self.machine_id, session)
            raise
        self.store.commit(rp.rp_id)
        self._progress(force=True)
        return BackupResult(job_id, rp, self.failed)

    def _targets(self, paths: list[str]) -> list[bytes]:
        out: list[bytes] = []
        for p in paths:
            ab = os.path.normpath(os.path.abspath(os.fsencode(p)))
            if ab != b"/":  # folders above the target are stored as folders: resolve symlinks among them
                ab = os.path.join(os.path.realpath(os.path.dirname(ab)), os.path.basename(ab))
            try:
                os.lstat(ab)
            except OSError as exc:
                raise_error("PathNotReadable", path=p, reason=exc.strerror or str(exc))
            out.append(ab)
        out = sorted(set(out))
        # A target inside another target is already covered by it.
        return [t for t in out if not any(t != o and (o == b"/" or t.startswith(o + b"/")) for o in out)]

    @staticmethod
    def _trie(targets: list[bytes]) -> Trie:
        root: Trie = {}
        for t in targets:
            node = root
            parts = [p for p in t.split(b"/") if p]
            if not parts:
                return {b"": {}}
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                assert child is not None  # nested targets were dropped by _targets
                node = child
            node[parts[-1]] = None  # a target: everything below it
        return root

    def _trie_tree(self, path: bytes, node: Trie) -> ChunkId:
        """The tree for `path` holding only the trie's children; targets are backed up in full."""
        if b"" in node:  # the whole root file system
            fd = os.open(b"/", os.O_RDONLY | os.O_DIRECTORY)
            try:
                return self._finish(self._dir(fd, b""))
            finally:
                os.close(fd)
        fd = os.open(path or b"/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            folder = _Folder(None, None)
            for name, child in node.items():
                full = path + b"/" + name
                st = os.lstat(name, dir_fd=fd)
                if child is None:
                    e = self._entry(fd, path, name, st, None, folder)
                    if e is not None:
                        folder.entries.append(e)
                else:
                    if not stat.S_ISDIR(st.st_mode):  # changed since the targets were resolved
                        raise_error("PathNotReadable", path=os.fsdecode(full), reason="it is no longer a folder")
                    e = fsmeta.entry_from_stat(name, st)
                    fsmeta.fill_xattrs(e, fd, path, name)
                    e.subtree = self._trie_tree(full, child)
                    folder.entries.append(e)
            return self._finish(folder)
        finally:
            os.close(fd)

    # ---- folders whose trees wait for content workers ---------------------------------------------

    def _settle(self, folder: _Folder | None) -> None:
        """Encode every closed folder whose entries are all complete, then its parent's, and so on up."""
        while folder is not None and folder.closed and folder.waiting == 0 and folder.cid is None:
            entries = [e for e in folder.entries if e is not None]
            data = tree.encode(entries)
            folder.cid = self._put_tree_data(data)
            if folder.sig is not None and len(entries) == folder.expected:
                self.store.put_tree(folder.path, folder.sig, data, self._epoch, folder.items)
            else:
                for full, state in folder.rows:
                    self.store.put(full, state)
            folder.rows = []
            folder.entries = []
            if folder.entry is not None:
                folder.entry.subtree = folder.cid
            parent = folder.parent
            if parent is not None:
                parent.waiting -= 1
            folder = parent

    def _finish(self, folder: _Folder) -> ChunkId:
        """Close `folder` and wait (collecting worker answers) until its tree is stored."""
        folder.closed = True
        self._settle(folder)
        while folder.cid is None:
            if self._jobs:
                self._send_jobs()
            elif self.pool is None or not self.pool.outstanding:
                raise RuntimeError("a folder's tree waits for content that was never asked for")
            else:
                self._collect()
        return folder.cid

    def _submit(self, job: FileJob, size: int, waiting: tuple[_Folder, int, Entry, bytes, os.stat_result]) -> None:
        assert self.pool is not None
        while self.pool.outstanding >= WINDOW_PER_WORKER * self.workers:
            self._collect()  # before this job is queued, so its answer never comes before its entry is placed
        self._waiting[job.token] = waiting
        self._jobs.append(job)
        self._jobs_bytes += size
        if len(self._jobs) >= BATCH_FILES or self._jobs_bytes >= BATCH_BYTES:
            self._send_jobs()

    def _send_jobs(self) -> None:
        assert self.pool is not None
        self.pool.submit(self._jobs)
        self._jobs, self._jobs_bytes = [], 0

    def _collect(self) -> None:
        assert self.pool is not None
        for done in self.pool.next_done():
            self._file_done(done)

    def _file_done(self, d: FileDone) -> None:
        """A worker's answer for one file: complete its entry (or drop it and list the failure)."""
        folder, slot, e, full, st = self._waiting.pop(d.token)
        if d.status != workers.OK:
            code = "FileChangedWhileRead" if d.status in (workers.CHANGED, workers.REPLACED) \
                else _code_for(OSError(d.errno, d.reason))
            self._fail(full, code, d.reason)
            folder.entries[slot] = None
            self.counters.files -= 1
        else:
            e.xattrs, e.acl_access, e.acl_default = d.xattrs, d.acl_access, d.acl_default
            e.size, e.mtime_ns, e.ctime_ns, e.extents = d.size, d.mtime_ns, d.ctime_ns, d.extents
            e.chunks = []
            if d.chunk is not None:
                data_len = sum(n for _, n in d.extents) if d.extents is not None else d.size
                self.up.add_sealed(ChunkId(d.chunk), d.sealed, data_len)
                self.counters.bytes_read += data_len
                e.chunks.append(d.chunk)
                self.refs.add(ChunkId(d.chunk))
            self._done += d.size
            if d.read_start_ns - d.ctime_ns > RACY_NS:
                self._remember(folder, full, FileState(d.size, d.mtime_ns, d.ctime_ns, st.st_ino, e.chunks,
                                                       e.extents, (e.xattrs, e.acl_access, e.acl_default)))
        folder.waiting -= 1
        self._settle(folder)
        self._progress()

    def _remember(self, folder: _Folder, full: bytes, state: FileState) -> None:
        """Keep the state a file was read in for the next run: in the checksum store's file rows, or, in a
        folder that will be recorded, only in its record (its items and tree hold the same), so that a backup
        writes one row per folder rather than one per file."""
        if folder.sig is None:
            self.store.put(full, state)
        else:
            folder.rows.append((full, state))

    # ---- walking ----------------------------------------------------------------------------------

    def _excluded(self, full: bytes, name: bytes) -> bool:
        for pat in self.excludes:
            target = full if b"/" in pat else name
            if fnmatch.fnmatchcase(target, pat):
                return True
        return False

    def _fail(self, path: bytes, code: str, reason: str) -> None:
        item = ItemFailed(path, code, reason)
        self.failed.append(item)
        self.events(item)

    def _put_tree(self, entries: list[Entry]) -> ChunkId:
        return self._put_tree_data(tree.encode(entries))

    def _put_tree_data(self, data: bytes) -> ChunkId:
        cid = chunkfmt.chunk_id(self.keys, data, CHUNK_TREE)
        self.up.add(CHUNK_TREE, cid, data)
        self.refs.add(cid)
        return cid

    def _dir(self, fd: int, path: bytes, parent: _Folder | None = None, entry: Entry | None = None) -> _Folder:
        """Walk one folder. Its tree is stored once the content workers answered for its files (at once when
        none are waited for); then `entry.subtree` is set and `parent` is told. A folder whose signature
        matches its record in the checksum store takes its entries from the recorded tree."""
        with os.scandir(fd) as it:
            items = sorted((d.name.encode("utf-8", "surrogateescape"), d) for d in it)  # os.fsencode, inline
        folder = _Folder(parent, entry, path)
        if parent is not None:
            parent.waiting += 1
        kept: list[tuple[bytes, os.stat_result]] = []
        whole = True  # every item stat'ed
        for name, d in items:
            try:
                st = d.stat(follow_symlinks=False)
            except OSError as exc:
                self._fail(path + b"/" + name, _code_for(exc), exc.strerror or str(exc))
                whole = False
                continue
            if self.excludes and self._excluded(path + b"/" + name, name):
                continue
            kept.append((name, st))
        rows, recordable = _items(kept)
        seen = _sig_enc.encode(rows)
        sig = hashlib.blake2b(seen, digest_size=16).digest() if whole and recordable else None
        record = self.store.tree(path)
        # Stamped with the vault's current chunk epoch: nothing was removed from the index since its chunks
        # were last seen there, so they are not asked about one by one.
        trusted = record is not None and record.epoch is not None and record.epoch == self._epoch
        if record is not None and sig is not None and record.sig == sig and \
                self._reuse(fd, path, folder, kept, record.tree, trusted):
            if not trusted and self._epoch is not None:
                self.store.stamp_tree(path, self._epoch)
            folder.closed = True
            self._settle(folder)
            return folder
        folder.sig, folder.items, folder.expected = sig, seen, len(kept)
        prior = _prior(record.tree, record.items) if record is not None else None
        # Items the record shows unchanged keep their recorded entry (folders are walked again); the rest are
        # looked at as in a folder without a record: their checksum-store rows in one query when many.
        same: list[Entry | None] = []
        rest = 0
        for (name, _), row in zip(kept, rows, strict=True):
            p = prior.get(name) if prior is not None else None
            if p is not None and _same_item(p[0], row) and p[1].type != tree.DIR and \
                    (trusted or not p[1].chunks or all(cid in self.up.known for cid in p[1].chunks)):
                same.append(p[1])
            else:
                same.append(None)
                rest += 1
        known = self.store.folder(path) if prior is None or rest > FEW_ROWS else None
        self._take(fd, path, folder, kept, same, known)
        folder.closed = True
        self._settle(folder)
        return folder

    def _reuse(self, fd: int, path: bytes, folder: _Folder, kept: list[tuple[bytes, os.stat_result]],
               data: bytes, trusted: bool) -> bool:
        """Take `folder`'s entries from its recorded tree `data`, walking its subfolders again; False (nothing
        done) when the record does not fit or a chunk of a file in it is no longer in the vault (asked only
        when the record is not `trusted`)."""
        try:
            recorded = _tree_dec.decode(data).entries
        except msgspec.DecodeError:
            return False
        if len(recorded) != len(kept):
            return False
        known = self.up.known
        for e, (name, _) in zip(recorded, kept, strict=True):
            if e.name != name:
                return False
            if e.chunks and not trusted and not all(c in known for c in e.chunks):
                return False
        self._take(fd, path, folder, kept, recorded, None)
        return True

    def _take(self, fd: int, path: bytes, folder: _Folder, kept: list[tuple[bytes, os.stat_result]],
              recorded: Sequence[Entry | None], known: dict[bytes, FileRow] | None) -> None:
        """Append each kept item's entry to `folder`: its recorded entry as it is (a file's size and chunk ids
        counted), or, for a folder (walked again) and an item without one, the entry `_entry` makes (`known`:
        the folder's checksum-store rows, None: looked up one by one)."""
        c = self.counters
        ids: list[bytes] = []
        for (name, st), e in zip(kept, recorded, strict=True):
            if e is None or e.type == tree.DIR:
                fresh = self._entry(fd, path, name, st, known, folder)
                if fresh is not None:
                    folder.entries.append(fresh)
                continue
            if e.type == tree.FILE:
                c.files += 1
                c.bytes_scanned += e.size
                self._done += e.size
                if e.chunks:
                    ids += e.chunks
            else:
                c.other += 1
            folder.entries.append(e)
        self.refs.update(ids)
        self._progress()

    def _entry(self, dir_fd: int, path: bytes, name: bytes, st: os.stat_result,
               known: dict[bytes, FileRow] | None, folder: _Folder) -> Entry | None:
        """The entry of one item, to be appended to `folder` next; `known` holds the checksum-store rows of its
        folder (None: look it up). A folder's subtree and a file given to a worker are completed later."""
        full = path + b"/" + name
        e = fsmeta.entry_from_stat(name, st)
        try:
            if e.type == tree.DIR:
                if (st.st_dev, st.st_ino) in self._skip:
                    return None
                if st.st_dev in self._pseudo:  # /proc, /sys and the like: keep the mount point, empty
                    e.subtree = self._put_tree([])
                    self.counters.dirs += 1
                    return e
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
                except OSError as exc:
                    self._fail(full, _code_for(exc, is_dir=True), exc.strerror or str(exc))
                    return None
                try:
                    fsmeta.fill_xattrs(e, dir_fd, path, name, fd)
                    self._dir(fd, full, folder, e)
                finally:
                    os.close(fd)
                self.counters.dirs += 1
            elif e.type == tree.FILE:
                if not self._file(dir_fd, path, name, st, e, known, folder):
                    return None
                self.counters.files += 1
            else:
                if e.type == tree.SYMLINK:
                    e.target = os.readlink(name, dir_fd=dir_fd)
                fsmeta.fill_xattrs(e, dir_fd, path, name)
                self.counters.other += 1
        except OSError as exc:
            self._fail(full, _code_for(exc, e.type == tree.DIR), exc.strerror or str(exc))
            return None
        self._progress()
        return e

    def _file(self, dir_fd: int, path: bytes, name: bytes, st: os.stat_result, e: Entry,
              known: dict[bytes, FileRow] | None, folder: _Folder) -> bool:
        full = path + b"/" + name
        self.counters.bytes_scanned += st.st_size
        link_key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and link_key in self._links:
            e.link_id, chunks, e.extents = self._links[link_key]
            e.chunks = chunks
            fsmeta.fill_xattrs(e, dir_fd, path, name)
            return True
        if known is None:
            cached = self.store.get(full)
        else:
            row = known.get(name)
            cached = None if row is None or row[:4] != (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) \
                else self.store.state(row)
        if (cached is not None and cached.size == st.st_size and cached.mtime_ns == st.st_mtime_ns
                and cached.ctime_ns == st.st_ctime_ns and cached.inode == st.st_ino
                and all(c in self.up.known for c in cached.chunks)):
            e.chunks, e.extents = cached.chunks, cached.extents
            if cached.xattrs is not None:
                e.xattrs, e.acl_access, e.acl_default = cached.xattrs
            else:
                fsmeta.fill_xattrs(e, dir_fd, path, name)
            self._done += st.st_size
        elif (self.pool is not None and st.st_size <= chunkfmt.SMALL_FILE and st.st_nlink == 1
              and len(full) < fsmeta.PATH_MAX - 1):
            # a small file: read, hashed and sealed by a worker; its entry is completed when the answer comes
            token = self._tokens = self._tokens + 1
            folder.waiting += 1
            self._submit(FileJob(token, full, st.st_dev, st.st_ino), st.st_size,
                         (folder, len(folder.entries), e, full, st))
            return True
        else:
            done_before = self._done
            read_start = time.time_ns()
            fd = open_for_read(name, dir_fd)
            try:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode) or (before.st_dev, before.st_ino) != link_key:
                    self._fail(full, "FileChangedWhileRead", "the file was replaced while the folder was read")
                    return False
                fsmeta.fill_xattrs(e, dir_fd, path, name, fd)
                try:
                    e.chunks, e.extents = self._content(fd, before)
                except ChangedWhileRead as exc:
                    self._fail(full, "FileChangedWhileRead", str(exc))
                    return False
                after = os.fstat(fd)
                if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != \
                        (before.st_size, before.st_mtime_ns, before.st_ctime_ns):
                    self._fail(full, "FileChangedWhileRead", "size or modification time changed during the read")
                    return False
            finally:
                os.close(fd)
            self._done = done_before + before.st_size  # holes of sparse files count as done
            # record the state seen before reading: a later change makes the next run read again
            e.size, e.mtime_ns, e.ctime_ns = before.st_size, before.st_mtime_ns, before.st_ctime_ns
            if read_start - before.st_ctime_ns > RACY_NS:  # ctime: the kernel sets it, utime cannot
                self._remember(folder, full, FileState(before.st_size, before.st_mtime_ns, before.st_ctime_ns,
                                                       before.st_ino, e.chunks, e.extents,
                                                       (e.xattrs, e.acl_access, e.acl_default)))
        self.refs.update(e.chunks)
        if st.st_nlink > 1:
            e.link_id = len(self._links) + 1
            self._links[link_key] = (e.link_id, e.chunks, e.extents)
        return True

    def _content(self, fd: int, st: os.stat_result) -> tuple[list[bytes], list[tuple[int, int]] | None]:
        size = st.st_size
        if size == 0:
            return [], None
        extents = extents_of(fd, st)
        reader = ExtentReader(fd, extents if extents is not None else [(0, size)])
        data_len = sum(n for _, n in extents) if extents is not None else size
        ids: list[bytes] = []
        if data_len <= chunkfmt.SMALL_FILE:
            self._chunk(memoryview(read_small(fd, st, extents)), ids)
            return ids, extents
        # Read in fresh blocks and cut each: the chunks are views of the block, handed to the seal thread
        # without a copy. The last cut of a block is only where the block ended, so it is cut again with the
        # next block; FastCDC's cut depends only on the bytes from the chunk's start, so the chunks are the
        # same as from one pass over the whole file.
        total = consumed = 0
        carry: memoryview = memoryview(b"")
        while True:
            # one byte more than what is left, so that a file of the expected length ends in this read
            buf = bytearray(len(carry) + min(READ_BLOCK, max(data_len - consumed, 0) + 1))
            buf[:len(carry)] = carry
            n = read_full(reader, memoryview(buf)[len(carry):])
            consumed += n
            got = len(carry) + n
            eof = got < len(buf)
            cuts = list(self.cdc.cut_buf(memoryview(buf)[:got])) if got else []
            if not eof:
                last = cuts.pop()
                carry = memoryview(buf)[last.offset:got]
            for c in cuts:
                self._chunk(c.data, ids)
                total += c.length
                self._progress()
            if eof:
                break
        if total != data_len:
            raise ChangedWhileRead("the file's length changed while it was read")
        return ids, extents

    def _chunk(self, data: bytes | memoryview, ids: list[bytes]) -> None:
        cid = chunkfmt.chunk_id(self.keys, data)
        self.up.add(CHUNK_DATA, cid, data, owned=True)
        self.counters.bytes_read += len(data)
        self._done += len(data)
        ids.append(cid)

    # ---- progress and change-tracking rebuild --------------------------------------------------------

    def _progress(self, force: bool = False) -> None:
        elapsed = self._clock.due(force)
        if elapsed is not None:
            c = self.counters
            if self._total is None and self._scan is not None:
                self._read_scan()
            self.events(Progress("backup", c.files + c.dirs + c.other, self._done, self._total, elapsed))

    def _start_scan(self, targets: list[bytes]) -> None:
        """Size a first backup in a forked process, so progress can show an ETA once it answers."""
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            return  # no ETA, nothing else lost
        if pid == 0:
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.close(r)
                os.write(w, self._scan_total(targets).to_bytes(8, "little"))
            finally:
                os._exit(0)
        os.close(w)
        os.set_blocking(r, False)
        self._scan = (pid, r)

    def _read_scan(self) -> None:
        assert self._scan is not None
        try:
            data = os.read(self._scan[1], 8)
        except BlockingIOError:
            return
        if len(data) == 8:
            self._total = int.from_bytes(data, "little")
        self._stop_scan()

    def _stop_scan(self) -> None:
        if self._scan is not None:
            pid, r = self._scan
            self._scan = None
            os.close(r)
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)

    def _scan_total(self, targets: list[bytes]) -> int:
        total = 0
        for t in targets:
            for root, dirs, files in os.walk(t, onerror=lambda _exc: None):
                dirs[:] = [d for d in dirs if not self._excluded(os.path.join(root, d), d)]
                for name in files:
                    full = os.path.join(root, name)
                    if self._excluded(full, name):
                        continue
                    with contextlib.suppress(OSError):
                        st = os.lstat(full)
                        if stat.S_ISREG(st.st_mode):
                            total += st.st_size
            with contextlib.suppress(OSError):
                st = os.lstat(t)
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
        return total

    def _rebuild_store(self, previous: RecoveryPoint) -> None:
        """Refill an empty checksum store from the last recovery point, so unchanged files are not re-read."""
        reader = ChunkReader(self.vault, self.machine_id, self.sealer)
        n = 0
        for path, e in reader.walk(previous.root):
            if e.type == tree.FILE and e.chunks is not None:
                self.store.put(b"/" + path, FileState(e.size, e.mtime_ns, e.ctime_ns, e.inode, e.chunks, e.extents,
                                                      (e.xattrs, e.acl_access, e.acl_default)))
                n += 1
        self.events(Notice("SalChecksumStoreInitializationFailed",
                           f"change tracking rebuilt from recovery point {previous.rp_id[:8]} ({n} files)"))
