"""Pack files: many sealed chunks in one blob, with a sealed trailer that lists them.

Layout in docs/format.md §Packs. A pack's id is the BLAKE3 hash of all its bytes, so the vault verifies
packs without any key; the agent verifies each chunk with its key.
"""

from __future__ import annotations

import struct

import blake3
import msgspec

from safehold.errors import raise_error
from safehold.formats.chunks import NONCE, TAG, Sealer
from safehold.model import ChunkId, PackEntry, PackId

MAGIC = b"SHPK"
VERSION = 1
VERSION_REPACKED = 2  # written by the vault's housekeeping, without any key: its trailer is not sealed
HEADER = MAGIC + bytes((VERSION, 0, 0, 0))
FOOTER = struct.Struct("<I4s")  # trailer length, magic
TRAILER_KIND = 2
TRAILER_ID = b"\0" * 32  # the trailer's associated id; distinct kind keeps it apart from chunks

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(list[tuple[bytes, int, int, int]])


def pack_id(data: bytes | memoryview) -> PackId:
    return PackId(blake3.blake3(data).hexdigest())


class PackBuilder:
    """Accumulates sealed chunks in one buffer; `finish()` returns the pack (a view of that buffer) and its
    entries.

    Chunks are sealed straight into the buffer (`seal_in`) or copied in once (`add`), and hashed as they come.
    The buffer may be one a finished pack used before (`buffer`, once that pack is stored and its view
    released): a backup then reuses a few buffers instead of touching fresh memory for every pack."""

    def __init__(self, buf: bytearray | None = None, hint: int = 0) -> None:
        """`buf`: a buffer to fill (from a stored pack); `hint`: the size the pack is expected to reach, which
        growth stops at until a chunk needs more."""
        self._buf = buf if buf is not None else bytearray()
        self._hint = hint
        self._len = 0
        self._hash = blake3.blake3()
        self.entries: list[PackEntry] = []
        self._put(HEADER)

    def __len__(self) -> int:
        return self._len

    @property
    def buffer(self) -> bytearray:
        return self._buf

    def _reserve(self, n: int) -> int:
        at = self._len
        need = at + n
        if need > len(self._buf):
            grown = max(len(self._buf) * 3 // 2, 1 << 16)
            if need <= self._hint:
                grown = min(grown, self._hint)
            self._buf.extend(bytes(max(grown, need) - len(self._buf)))
        self._len = at + n
        return at

    def _put(self, data: bytes | memoryview) -> int:
        at = self._reserve(len(data))
        self._buf[at:at + len(data)] = data
        self._hash.update(data)
        return at

    def add(self, cid: ChunkId, kind: int, blob: bytes | memoryview) -> int:
        """Copy in a chunk sealed elsewhere; its stored length."""
        self.entries.append(PackEntry(cid, kind, self._put(blob), len(blob)))
        return len(blob)

    def seal_in(self, cid: ChunkId, kind: int, data: bytes | memoryview, sealer: Sealer) -> int:
        """Compress and encrypt a chunk into the pack itself; its stored length."""
        record = sealer.record(data)
        n = NONCE + len(record) + TAG
        at = self._reserve(n)
        with memoryview(self._buf)[at:at + n] as out:
            sealer.seal_into(kind, cid, record, out)
            self._hash.update(out)
        self.entries.append(PackEntry(cid, kind, at, n))
        return n

    def finish(self, sealer: Sealer) -> tuple[PackId, memoryview, list[PackEntry]]:
        listing = _enc.encode([(e.chunk_id, e.kind, e.offset, e.length) for e in self.entries])
        trailer = sealer.seal(TRAILER_KIND, TRAILER_ID, listing)
        self._put(trailer + FOOTER.pack(len(trailer), MAGIC))
        return PackId(self._hash.hexdigest()), memoryview(self._buf)[:self._len], self.entries


def repack(chunks: list[tuple[ChunkId, int, bytes | memoryview]]) -> tuple[PackId, bytes, list[PackEntry]]:
    """A version 2 pack of sealed chunks copied as they are (chunk id, kind, sealed blob): how the vault keeps
    the live chunks of a mostly-garbage pack without any key. Its trailer lists the same facts the vault's
    index holds, in the clear; every chunk stays authenticated by its own seal."""
    buf = bytearray(MAGIC + bytes((VERSION_REPACKED, 0, 0, 0)))
    entries: list[PackEntry] = []
    for cid, kind, blob in chunks:
        entries.append(PackEntry(cid, kind, len(buf), len(blob)))
        buf += blob
    listing = _enc.encode([(e.chunk_id, e.kind, e.offset, e.length) for e in entries])
    buf += listing
    buf += FOOTER.pack(len(listing), MAGIC)
    data = bytes(buf)
    return pack_id(data), data, entries


def read_entries(data: bytes, sealer: Sealer | None) -> list[PackEntry]:
    """Parse a pack's trailer (used by check and to rebuild a lost index); a version 1 trailer is opened and
    authenticated with `sealer`, a version 2 (repacked) one is read as it is."""
    if len(data) < len(HEADER) + FOOTER.size or data[:4] != MAGIC:
        raise_error("IntegrityError", what="pack header is damaged")
    if data[4] not in (VERSION, VERSION_REPACKED):
        raise_error("IntegrityError", what=f"pack version {data[4]} is not supported")
    tlen, magic = FOOTER.unpack_from(data, len(data) - FOOTER.size)
    start = len(data) - FOOTER.size - tlen
    if magic != MAGIC or start < len(HEADER):
        raise_error("IntegrityError", what="pack footer is damaged")
    if data[4] == VERSION_REPACKED:
        listing = data[start:len(data) - FOOTER.size]
    elif sealer is None:
        raise_error("IntegrityError", what="a version 1 pack trailer needs the machine's key")
    else:
        listing = sealer.open(TRAILER_KIND, TRAILER_ID, data[start:len(data) - FOOTER.size],
                               verify_id=False)
    try:
        rows = _dec.decode(listing)
    except msgspec.DecodeError as exc:
        raise_error("IntegrityError", what=f"pack trailer does not decode: {exc}")
    entries = [PackEntry(ChunkId(c), k, o, n) for c, k, o, n in rows]
    for e in entries:
        if e.offset < len(HEADER) or e.offset + e.length > start:
            raise_error("IntegrityError", what="pack trailer points outside the pack")
    return entries
