"""A small bounded cache of verified data chunks for reads in place (the mount), shared by threads, with
read-ahead in the background.

Not a restore path: restore streams every chunk once through ChunkReader.read_many and keeps nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

from safehold.agent.reader import MAX_SPAN, ChunkReader
from safehold.errors import raise_error
from safehold.formats.chunks import Sealer
from safehold.model import CHUNK_DATA, ChunkLocation

CACHE_BYTES = 96 * 1024 * 1024


class ChunkCache:
    """Chunks by id, least recently used out first once `max_bytes` is passed. A chunk asked for by several
    threads at once is fetched and verified once. Chunks that fail verification are never cached: every read
    of them fails again. Vault requests go one at a time (the embedded vault's catalog and the reader's
    location cache are not meant for threads); decryption and checks run in parallel, one Sealer per thread.
    """

    def __init__(self, reader: ChunkReader, max_bytes: int = CACHE_BYTES, workers: int = 2) -> None:
        self.reader = reader
        self.max_bytes = max_bytes
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._pending: dict[bytes, Future[bytes]] = {}
        self._lock = threading.Lock()
        self.vault_lock = threading.Lock()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="safehold-readahead")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _sealer(self) -> Sealer:
        sealer: Sealer | None = getattr(self._local, "sealer", None)
        if sealer is None:
            sealer = self._local.sealer = Sealer(self.reader.sealer.keys)
        return sealer

    def _location(self, cid: bytes) -> ChunkLocation:
        with self.vault_lock:
            loc = self.reader.location(cid)
        if loc.kind != CHUNK_DATA:
            raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} has the wrong kind in the index")
        return loc

    def _claim(self, cids: list[bytes]) -> list[tuple[bytes, Future[bytes]]]:
        """Futures for the chunks neither cached nor on their way; the caller must settle each."""
        out: list[tuple[bytes, Future[bytes]]] = []
        with self._lock:
            for cid in cids:
                if cid in self._data or cid in self._pending:
                    continue
                fut: Future[bytes] = Future()
                self._pending[cid] = fut
                out.append((cid, fut))
        return out

    def _settle(self, cid: bytes, fut: Future[bytes], data: bytes | None, exc: BaseException | None) -> None:
        with self._lock:
            self._pending.pop(cid, None)
            if data is not None:
                self._data[cid] = data
                self._bytes += len(data)
                while self._bytes > self.max_bytes and len(self._data) > 1:
                    _, old = self._data.popitem(last=False)
                    self._bytes -= len(old)
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(data or b"")

    def _load(self, claimed: list[tuple[bytes, Future[bytes]]]) -> None:
        """Fetch claimed chunks, adjacent ones of one pack in one request, verify each and settle it."""
        i = 0
        while i < len(claimed):
            try:
                locs = [self._location(claimed[i][0])]
                j = i + 1
                while j < len(claimed):
                    try:
                        nxt = self._location(claimed[j][0])
                    except Exception:  # that chunk fails on its own turn, with its own error
                        break
                    last = locs[-1]
                    if nxt.pack_id != last.pack_id or nxt.offset != last.offset + last.length or \
                            nxt.offset + nxt.length - locs[0].offset > MAX_SPAN:
                        break
                    locs.append(nxt)
                    j += 1
                with self.vault_lock:
                    span = self.reader.vault.read(self.reader.machine_id, locs[0].pack_id, locs[0].offset,
                                                  locs[-1].offset + locs[-1].length - locs[0].offset)
            except BaseException as exc:
                self._settle(claimed[i][0], claimed[i][1], None, exc)
                i += 1
                continue
            for (cid, fut), loc in zip(claimed[i:j], locs, strict=True):
                start = loc.offset - locs[0].offset
                try:
                    data = self._sealer().open(CHUNK_DATA, cid, span[start:start + loc.length])
                except BaseException as exc:
                    self._settle(cid, fut, None, exc)
                else:
                    self._settle(cid, fut, data, None)
            i = j

    def get(self, cid: bytes) -> bytes:
        """The verified plaintext of a data chunk; SafeholdError when it is missing or fails verification."""
        with self._lock:
            data = self._data.get(cid)
            if data is not None:
                self._data.move_to_end(cid)
                return data
            fut = self._pending.get(cid)
        if fut is None:
            claimed = self._claim([cid])
            if claimed:
                self._load(claimed)
                fut = claimed[0][1]
            else:
                return self.get(cid)  # another thread claimed it in between
        return fut.result()

    def prefetch(self, cids: list[bytes]) -> None:
        """Start loading chunks in the background; a later get() of one of them waits for it."""
        claimed = self._claim(cids)
        if claimed:
            self._pool.submit(self._load, claimed)

    def cached(self, cid: bytes) -> bool:
        with self._lock:
            return cid in self._data or cid in self._pending
