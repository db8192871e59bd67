"""Restore's read-ahead: one thread walks the recovery point ahead of the restore and reads, decrypts,
decompresses and verifies what the restore will ask for, so that this work overlaps the restore's file
system calls (which release the GIL) instead of alternating with them.

The thread visits, in the restore's own order, every folder listing and every file's data that the restore
may ask for; the restore asks for a subsequence of it (it skips items already at the target, links of hard
links, folders it could not create). So the restore takes items from the head of a bounded queue and drops
those it does not want until it meets the one it asks for. An error reading an item (a chunk that fails
verification, a vault that cannot be reached) is delivered where the restore asks for that item, as if it
had read it itself.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from typing import Any

from safehold.agent.reader import ChunkReader
from safehold.formats import tree
from safehold.formats.tree import Entry
from safehold.model import CHUNK_DATA

BUDGET = 8 * 1024 * 1024  # bytes of verified data waiting for the restore, at most (one large chunk may pass)

# One item of the queue: (key, payload). key: ("T", tree id) for a listing, ("F", tree id, index) for a
# file's data. payload: a listing, one chunk's bytes, _END after a file's last chunk, or an exception.
Key = tuple[Any, ...]
_END = object()
_DONE: Key = ("done",)

# The part of the walk both sides share: which entries of a listing are visited, and with which paths below.
Select = Callable[[list[bytes], list[list[bytes]] | None], tuple[bool, list[list[bytes]] | None]]


class InlineReads:
    """The same calls as ReadAhead, read on the caller's thread when asked (SAFEHOLD_RESTORE_READAHEAD=0)."""

    def __init__(self, reader: ChunkReader) -> None:
        self._reader = reader

    def listing(self, tid: bytes) -> list[Entry]:
        return self._reader.tree(tid)

    def data(self, tid: bytes, index: int, chunks: list[bytes]) -> Iterator[bytes]:
        return self._reader.read_many(chunks, CHUNK_DATA)

    def close(self) -> None:
        pass


class ReadAhead:
    def __init__(self, reader: ChunkReader, root: bytes, wanted: list[list[bytes]] | None, select: Select,
                 budget: int = BUDGET) -> None:
        self._reader = reader
        self._select = select
        self._budget = budget
        self._items: collections.deque[tuple[Key, object, int]] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._restore_waits = self._ahead_waits = False  # who sleeps on the condition: wake only them
        self._thread = threading.Thread(target=self._run, args=(root, wanted), name="safehold-restore-read",
                                        daemon=True)
        self._thread.start()

    # ---- the restore's side ------------------------------------------------------------------------

    def listing(self, tid: bytes) -> list[Entry]:
        got = self._take(("T", tid))
        assert isinstance(got, list)
        return got

    def data(self, tid: bytes, index: int, chunks: list[bytes]) -> Iterator[bytes]:
        """The verified chunks (`chunks`) of the file at `index` of listing `tid`, in order."""
        key: Key = ("F", tid, index)
        chunk = self._take(key)
        while chunk is not _END:
            assert isinstance(chunk, bytes)
            yield chunk
            chunk = self._next_of(key)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._items.clear()
            self._cond.notify_all()
        self._thread.join()

    def _pop(self) -> tuple[Key, object]:
        with self._cond:
            while not self._items:
                self._restore_waits = True
                self._cond.wait()
                self._restore_waits = False
            key, payload, size = self._items.popleft()
            self._bytes -= size
            if self._ahead_waits and self._bytes <= self._budget:
                self._cond.notify()
        return key, payload

    def _take(self, key: Key) -> object:
        """The first item of `key`, dropping the items before it."""
        while True:
            got, payload = self._pop()
            if got == key:
                break
            if got == _DONE:  # the walks disagree: never expected, but never a hang either
                if isinstance(payload, BaseException):
                    raise payload
                raise RuntimeError(f"the restore's read-ahead has nothing for {key[0]} {key[1].hex()[:16]}")
        if isinstance(payload, BaseException):
            raise payload
        return payload

    def _next_of(self, key: Key) -> object:
        got, payload = self._pop()
        if got != key:
            raise RuntimeError("the restore's read-ahead lost its place in a file")
        if isinstance(payload, BaseException):
            raise payload
        return payload

    # ---- the read-ahead thread -----------------------------------------------------------------------

    def _put(self, key: Key, payload: object, size: int = 0) -> bool:
        with self._cond:
            while self._bytes > self._budget and not self._stopped:
                self._ahead_waits = True
                self._cond.wait()
                self._ahead_waits = False
            if self._stopped:
                return False
            self._items.append((key, payload, size))
            self._bytes += size
            if self._restore_waits:
                self._cond.notify()
        return True

    def _run(self, root: bytes, wanted: list[list[bytes]] | None) -> None:
        try:
            self._walk(root, [], wanted)
            self._put(_DONE, None)
        except BaseException as exc:  # not an item's error (those are delivered in place): the end of the walk
            self._put(_DONE, exc)

    def _walk(self, tid: bytes, parts: list[bytes], wanted: list[list[bytes]] | None) -> bool:
        """False once the restore stopped."""
        try:
            entries = self._reader.tree(tid)
        except Exception as exc:  # the restore reports it for the folder, and does not go below it
            return self._put(("T", tid), exc)
        if not self._put(("T", tid), entries, 64 * len(entries)):
            return False
        for index, e in enumerate(entries):
            here = [*parts, e.name]
            visit, sub = self._select(here, wanted)
            if not visit:
                continue
            if e.type == tree.DIR and e.subtree:
                if not self._walk(e.subtree, here, sub):
                    return False
            elif e.type == tree.FILE and e.chunks:
                key: Key = ("F", tid, index)
                try:
                    for chunk in self._reader.read_many(e.chunks, CHUNK_DATA):
                        if not self._put(key, chunk, len(chunk)):
                            return False
                except Exception as exc:
                    if not self._put(key, exc):
                        return False
                    continue
                if not self._put(key, _END):
                    return False
        return True
