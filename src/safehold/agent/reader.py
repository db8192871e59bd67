"""Reading chunks and trees of this machine back from the vault, verified with the machine key.

Used by restore, check and the checksum-store rebuild. Groups reads by pack and caches locations. With
`prefetch` (restore), the next pack range is requested from the vault on a background thread while the
current one is opened and written, so that vault reads and disk writes overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from safehold.errors import SafeholdError, raise_error
from safehold.formats import tree
from safehold.formats.chunks import Sealer
from safehold.formats.tree import Entry
from safehold.model import CHUNK_TREE, ChunkId, ChunkLocation, MachineId, PackId
from safehold.ports import VaultClient

READ_AHEAD = 4 * 1024 * 1024
MAX_SPAN = 16 * 1024 * 1024  # adjacent chunks fetched in one request, at most


class ChunkReader:
    """Chunks by id. Small reads fetch a window of the pack around them (forward for data, which restore
    meets in the order backup wrote it; backward for trees, which backup writes bottom-up and restore reads
    top-down), so that many small files cost one vault request instead of one each. Every chunk is still
    authenticated on its own when it is opened.
    """

    def __init__(self, vault: VaultClient, machine_id: MachineId, sealer: Sealer, prefetch: bool = False) -> None:
        self.vault = vault
        self.machine_id = machine_id
        self.sealer = sealer
        self._loc: dict[ChunkId, ChunkLocation] = {}
        self._sizes: dict[PackId, int] | None = None
        self._windows: dict[int, tuple[PackId, int, bytes]] = {}  # per kind: pack, start, bytes
        # One request at a time runs ahead, on one thread that only calls vault.read (thread-safe for both
        # vault kinds); everything else here stays on the caller's thread.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="safehold-fetch") if prefetch else None
        self._ahead: tuple[PackId, int, int, Future[bytes]] | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._drop_ahead()
            self._pool.shutdown(wait=True)
            self._pool = None

    # ---- requests sent ahead ---------------------------------------------------------------------------

    def _send_ahead(self, pack_id: PackId, start: int, length: int) -> None:
        if self._pool is None or length <= 0:
            return
        self._drop_ahead()
        self._ahead = (pack_id, start, length,
                       self._pool.submit(self.vault.read, self.machine_id, pack_id, start, length))

    def _drop_ahead(self) -> None:
        """Forget the request sent ahead: not started, it never runs; running, it ends unread."""
        if self._ahead is not None:
            self._ahead[3].cancel()
            self._ahead = None

    def _take_ahead(self, pack_id: PackId, start: int, end: int) -> tuple[int, bytes] | None:
        """(its start, its bytes) when the request sent ahead is of pack_id and covers [start, end)."""
        ahead = self._ahead
        if ahead is None or ahead[0] != pack_id or not ahead[1] <= start < end <= ahead[1] + ahead[2]:
            return None
        self._ahead = None
        return ahead[1], ahead[3].result()  # its error, if it failed, is this read's error

    def _fetch(self, pack_id: PackId, start: int, length: int) -> bytes:
        """Exactly [start, start+length) of a pack: from the request sent ahead when that is it, else now."""
        got = self._take_ahead(pack_id, start, start + length)
        if got is not None:
            a_start, data = got
            return data if (a_start, len(data)) == (start, length) else data[start - a_start:start - a_start + length]
        return self.vault.read(self.machine_id, pack_id, start, length)

    def _pack_size(self, pack_id: PackId) -> int | None:
        if self._sizes is None:
            self._sizes = dict(self.vault.packs(self.machine_id))
        return self._sizes.get(pack_id)

    def _range(self, loc: ChunkLocation, length: int) -> bytes:
        """`length` bytes of loc's pack from loc.offset, through the read-ahead window of loc.kind."""
        win = self._windows.get(loc.kind)
        if win is not None and win[0] == loc.pack_id and win[1] <= loc.offset and \
                loc.offset + length <= win[1] + len(win[2]):
            start = loc.offset - win[1]
            return win[2][start:start + length]
        size = self._pack_size(loc.pack_id)
        if length >= READ_AHEAD // 4 or size is None or loc.offset + length > size:
            return self._fetch(loc.pack_id, loc.offset, length)
        if loc.kind == CHUNK_TREE:
            start = max(0, loc.offset + length - READ_AHEAD)
            end = loc.offset + length
        else:
            start = loc.offset
            end = min(size, loc.offset + READ_AHEAD)
        try:
            data = self._window_bytes(loc, win, start, end)
        except SafeholdError:  # a damaged or cut pack: the chunk alone may still be readable
            return self.vault.read(self.machine_id, loc.pack_id, loc.offset, length)
        self._windows[loc.kind] = (loc.pack_id, start, data)
        if loc.kind != CHUNK_TREE and start + len(data) < size:  # data is read forward: ask for the next window
            self._send_ahead(loc.pack_id, start + len(data), min(size, start + len(data) + READ_AHEAD)
                             - (start + len(data)))
        return data[loc.offset - start:loc.offset - start + length]

    def _window_bytes(self, loc: ChunkLocation, win: tuple[PackId, int, bytes] | None, start: int,
                      end: int) -> bytes:
        """The bytes of a new data window [start, end); when the window sent ahead holds the chunk, it is
        that window, led by the unread tail of the current one (a chunk may straddle the two)."""
        if loc.kind != CHUNK_TREE:
            got = self._take_ahead(loc.pack_id, loc.offset + loc.length - 1, loc.offset + loc.length)
            if got is not None:
                a_start, data = got
                if a_start <= loc.offset:
                    return data[loc.offset - a_start:]
                if win is not None and win[0] == loc.pack_id and win[1] <= loc.offset and \
                        win[1] + len(win[2]) == a_start:
                    return win[2][loc.offset - win[1]:] + data
        return self.vault.read(self.machine_id, loc.pack_id, start, end - start)

    def preload(self, ids: Iterable[bytes]) -> None:
        missing = [ChunkId(i) for i in ids if i not in self._loc]
        if missing:
            self._loc.update(self.vault.locate(self.machine_id, missing))

    def location(self, cid: bytes) -> ChunkLocation:
        loc = self._loc.get(ChunkId(cid))
        if loc is None:
            self.preload([cid])
            loc = self._loc.get(ChunkId(cid))
            if loc is None:
                raise_error("ChunkMissing", chunk=cid.hex()[:16])
        return loc

    def read(self, cid: bytes, kind: int) -> bytes:
        loc = self.location(cid)
        if loc.kind != kind:
            raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} has the wrong kind in the index")
        return self.sealer.open(kind, cid, self._range(loc, loc.length))

    def read_many(self, ids: list[bytes], kind: int) -> Iterator[bytes]:
        """Chunks in the order given, reading adjacent chunks of one pack in one request."""
        self.preload(ids)
        spans: list[tuple[int, int, ChunkLocation, int]] = []  # ids[i:j], the first one's location, end
        i = 0
        while i < len(ids):
            loc = self.location(ids[i])
            j, end = i + 1, loc.offset + loc.length
            while j < len(ids) and j - i < 64 and end - loc.offset < MAX_SPAN:
                nxt = self.location(ids[j])
                if nxt.pack_id != loc.pack_id or nxt.offset != end:
                    break
                end += nxt.length
                j += 1
            spans.append((i, j, loc, end))
            i = j
        for n, (i, j, loc, end) in enumerate(spans):
            if loc.kind != kind:
                raise_error("IntegrityError", what=f"chunk {ids[i].hex()[:16]} has the wrong kind in the index")
            span = self._range(loc, end - loc.offset)
            if n + 1 < len(spans):  # a large next span (read on its own, not through a window): ask for it now
                _, _, nloc, nend = spans[n + 1]
                if nend - nloc.offset >= READ_AHEAD // 4:
                    self._send_ahead(nloc.pack_id, nloc.offset, nend - nloc.offset)
            for cid in ids[i:j]:
                cl = self.location(cid)
                if cl.kind != kind:
                    raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} has the wrong kind")
                start = cl.offset - loc.offset
                yield self.sealer.open(kind, cid, span[start:start + cl.length])

    def tree(self, tid: bytes) -> list[Entry]:
        return tree.decode(self.read(tid, CHUNK_TREE))

    def walk(self, tid: bytes, prefix: bytes = b"") -> Iterator[tuple[bytes, Entry]]:
        """Every entry below a tree, depth first, with its path relative to the tree (no leading slash)."""
        for e in self.tree(tid):
            path = prefix + b"/" + e.name if prefix else e.name
            yield path, e
            if e.type == tree.DIR and e.subtree:
                yield from self.walk(e.subtree, path)
