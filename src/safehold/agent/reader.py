"""Reading chunks and trees of this machine back from the vault, verified with the machine key.

Used by restore, check and the checksum-store rebuild. Groups reads by pack and caches locations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import cast

from safehold.errors import SafeholdError, raise_error
from safehold.formats import tree
from safehold.formats.chunks import Sealer
from safehold.formats.tree import Entry
from safehold.model import CHUNK_TREE, ChunkId, ChunkLocation, MachineId, PackId
from safehold.ports import VaultClient

READ_AHEAD = 4 * 1024 * 1024
MAX_SPAN = 2 * 1024 * 1024  # adjacent chunks fetched in one request, at most


class ChunkReader:
    """Chunks by id. Small reads fetch a window of the pack around them (forward for data, which restore
    meets in the order backup wrote it; backward for trees, which backup writes bottom-up and restore reads
    top-down), so that many small files cost one vault request instead of one each. Every chunk is still
    authenticated on its own when it is opened.
    """

    def __init__(self, vault: VaultClient, machine_id: MachineId, sealer: Sealer) -> None:
        self.vault = vault
        self.machine_id = machine_id
        self.sealer = sealer
        self._loc: dict[bytes, ChunkLocation] = {}
        self._sizes: dict[PackId, int] | None = None
        self._windows: dict[int, tuple[PackId, int, bytes]] = {}  # per kind: pack, start, bytes

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
            return self.vault.read(self.machine_id, loc.pack_id, loc.offset, length)
        if loc.kind == CHUNK_TREE:
            start = max(0, loc.offset + length - READ_AHEAD)
            end = loc.offset + length
        else:
            start = loc.offset
            end = min(size, loc.offset + READ_AHEAD)
        try:
            data = self.vault.read(self.machine_id, loc.pack_id, start, end - start)
        except SafeholdError:  # a damaged or cut pack: the chunk alone may still be readable
            return self.vault.read(self.machine_id, loc.pack_id, loc.offset, length)
        self._windows[loc.kind] = (loc.pack_id, start, data)
        return data[loc.offset - start:loc.offset - start + length]

    def preload(self, ids: Iterable[bytes]) -> None:
        loc = self._loc
        missing = [ChunkId(i) for i in ids if i not in loc]
        if missing:
            loc.update(cast("dict[bytes, ChunkLocation]", self.vault.locate(self.machine_id, missing)))

    def location(self, cid: bytes) -> ChunkLocation:
        loc = self._loc.get(cid)
        if loc is None:
            self.preload([cid])
            loc = self._loc.get(cid)
            if loc is None:
                raise_error("ChunkMissing", chunk=cid.hex()[:16])
        return loc

    def read(self, cid: bytes, kind: int) -> bytes:
        loc = self._loc.get(cid) or self.location(cid)
        pack_id, offset, length, loc_kind = loc
        if loc_kind != kind:
            raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} has the wrong kind in the index")
        win = self._windows.get(kind)  # _range's first case, written out: most small files are read from it
        if win is not None and win[0] == pack_id and win[1] <= offset and offset + length <= win[1] + len(win[2]):
            start = offset - win[1]
            return self.sealer.open(kind, cid, win[2][start:start + length])
        return self.sealer.open(kind, cid, self._range(loc, length))

    def read_many(self, ids: list[bytes], kind: int) -> Iterator[bytes]:
        """Chunks in the order given, reading adjacent chunks of one pack in one request."""
        self.preload(ids)
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
            if j - i == 1:
                yield self.read(ids[i], kind)
            else:
                span = self._range(loc, end - loc.offset)
                for cid in ids[i:j]:
                    cl = self.location(cid)
                    if cl.kind != kind:
                        raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} has the wrong kind")
                    start = cl.offset - loc.offset
                    yield self.sealer.open(kind, cid, span[start:start + cl.length])
            i = j

    def tree(self, tid: bytes) -> list[Entry]:
        return tree.decode(self.read(tid, CHUNK_TREE))

    def walk(self, tid: bytes, prefix: bytes = b"") -> Iterator[tuple[bytes, Entry]]:
        """Every entry below a tree, depth first, with its path relative to the tree (no leading slash)."""
        for e in self.tree(tid):
            path = prefix + b"/" + e.name if prefix else e.name
            yield path, e
            if e.type == tree.DIR and e.subtree:
                yield from self.walk(e.subtree, path)
