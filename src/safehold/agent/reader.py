"""Reading chunks and trees of this machine back from the vault, verified with the machine key.

Used by restore, check and the checksum-store rebuild. Groups reads by pack and caches locations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from safehold.errors import raise_error
from safehold.formats import tree
from safehold.formats.chunks import Sealer
from safehold.formats.tree import Entry
from safehold.model import CHUNK_TREE, ChunkId, ChunkLocation, MachineId
from safehold.ports import VaultClient


class ChunkReader:
    def __init__(self, vault: VaultClient, machine_id: MachineId, sealer: Sealer) -> None:
        self.vault = vault
        self.machine_id = machine_id
        self.sealer = sealer
        self._loc: dict[ChunkId, ChunkLocation] = {}

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
        blob = self.vault.read(self.machine_id, loc.pack_id, loc.offset, loc.length)
        return self.sealer.open(kind, cid, blob)

    def read_many(self, ids: list[bytes], kind: int) -> Iterator[bytes]:
        """Chunks in the order given, reading adjacent chunks of one pack in one request."""
        self.preload(ids)
        i = 0
        while i < len(ids):
            loc = self.location(ids[i])
            j, end = i + 1, loc.offset + loc.length
            while j < len(ids) and j - i < 64:
                nxt = self.location(ids[j])
                if nxt.pack_id != loc.pack_id or nxt.offset != end:
                    break
                end += nxt.length
                j += 1
            if j - i == 1:
                yield self.read(ids[i], kind)
            else:
                span = self.vault.read(self.machine_id, loc.pack_id, loc.offset, end - loc.offset)
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
