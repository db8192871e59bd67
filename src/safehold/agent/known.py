"""The chunk ids the vault holds for this machine, as a backup checks them: compact and fast to ask.

As a set of bytes, 200,000 ids took 25 MB of the agent's peak. Here the vault's ids sit sorted in one bytes
object (32 bytes each) with a table of where each bucket of leading bits starts, so a lookup compares
within a bucket of about two ids; ids added during the backup go to a plain set. Ids are uniformly
distributed (keyed hashes), so buckets stay even. Forked content workers share the pages untouched:
looking up reads them and never writes a reference count.
"""

from __future__ import annotations

import io
import itertools
from array import array
from collections.abc import Iterable

from safehold.model import ID_SIZE, PackedIds, join_ids

PREFIX_BITS = 24  # leading bits read to place an id in its bucket (the table uses at most this many)


def _bucket_bits(n: int) -> int:
    """About two ids per bucket: the table costs 2 bytes per id, the lookups compare few ids."""
    bits = 4
    while bits < PREFIX_BITS and (1 << bits) * 2 < n:
        bits += 1
    return bits


class KnownIds:
    __slots__ = ("_data", "_shift", "_starts", "added", "listed")

    def __init__(self, ids: Iterable[bytes] = ()) -> None:
        """`ids`: distinct ids, best in ascending order (as the vault lists them); any other order is sorted
        here, at the cost of an object per id for a moment."""
        self.added: set[bytes] = set()  # ids this job added: callers may ask this set first, at C speed
        if isinstance(ids, PackedIds):
            self._data = ids.data
            self._index()
            return
        out = io.BytesIO()
        last = b""
        ordered = True
        for cid in ids:
            if len(cid) != ID_SIZE:
                raise ValueError("a chunk id is 32 bytes")
            ordered = ordered and cid > last
            last = cid
            out.write(cid)
        data = out.getvalue()
        del out
        if not ordered:
            data = join_ids(sorted({data[i:i + ID_SIZE] for i in range(0, len(data), ID_SIZE)}))
        self._data = data
        self._index()

    def _index(self) -> None:
        data = self._data
        n = len(data) // ID_SIZE
        self.listed = n > 0  # whether the vault listed any id (a first backup: none)
        bits = _bucket_bits(n)
        self._shift = PREFIX_BITS - bits
        counts = [0] * ((1 << bits) + 1)
        shift = self._shift
        for i in range(0, len(data), ID_SIZE):
            counts[(int.from_bytes(data[i:i + 3], "big") >> shift) + 1] += 1
        starts = list(itertools.accumulate(counts))  # bucket b holds ids [starts[b], starts[b + 1])
        self._starts = array("I" if n < 1 << 32 else "Q", starts)

    def __contains__(self, cid: object) -> bool:
        if not isinstance(cid, bytes):
            return False
        if cid in self.added:
            return True
        data = self._data
        if not data:  # a first backup: nothing known before it
            return False
        b = int.from_bytes(cid[:3], "big") >> self._shift
        lo, hi = self._starts[b] * ID_SIZE, self._starts[b + 1] * ID_SIZE
        while lo < hi:
            at = data.find(cid, lo, hi)
            if at < 0:
                break
            if at % ID_SIZE == 0:
                return True
            lo = at + 1  # matched across two ids: look on
        return False

    def add(self, cid: bytes) -> None:
        """Count `cid` as known from now on (the caller asked first: it is not among the vault's)."""
        self.added.add(cid)

    def __len__(self) -> int:
        return len(self._data) // ID_SIZE + len(self.added)

    def clear(self) -> None:
        self._data = b""
        self.added.clear()
        self._index()
