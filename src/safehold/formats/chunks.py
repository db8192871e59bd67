"""Chunking, chunk ids and sealed chunk blobs (compress, then AES-256-GCM).

Layout in docs/format.md §Chunks. Pure functions of bytes and keys; they run in worker processes too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyfastcdc import FastCDC

from safehold.errors import raise_error
from safehold.formats.keys import MachineKeys
from safehold.model import CHUNK_DATA, CHUNK_TREE, ChunkId

# FastCDC: min 256 KiB, normal 1 MiB, max 4 MiB; files up to SMALL_FILE are one chunk.
CDC_MIN = 256 * 1024
CDC_AVG = 1024 * 1024
CDC_MAX = 4 * 1024 * 1024
SMALL_FILE = CDC_MIN

COMP_NONE = 0
COMP_ZSTD = 1
ZSTD_LEVEL = 1
SAMPLE = 8 * 1024  # compressibility samples of chunks from SAMPLE_FROM bytes up
SAMPLE_FROM = 128 * 1024
NONCE = 12
TAG = 16
OVERHEAD = NONCE + 1 + TAG  # nonce, compression id, GCM tag
MAX_PLAIN = 1 << 30  # largest plaintext accepted (trees of huge folders); checked after authentication


def chunker(keys: MachineKeys) -> FastCDC:
    """A FastCDC cutter whose gear table is keyed, so chunk sizes do not fingerprint known files."""
    return FastCDC(CDC_AVG - CDC_MIN, min_size=CDC_MIN, max_size=CDC_MAX, seed=keys.chunker_seed)


def cut(cdc: FastCDC, data: bytes | memoryview) -> Iterator[memoryview]:
    if len(data) <= SMALL_FILE:
        yield memoryview(data)
        return
    for c in cdc.cut_buf(data):
        yield c.data


def chunk_id(keys: MachineKeys, data: bytes | memoryview, kind: int = CHUNK_DATA) -> ChunkId:
    """Keyed BLAKE3; trees use their own key so that no file content can share an id with a tree."""
    key = keys.tree_id_key if kind == CHUNK_TREE else keys.id_key
    return ChunkId(blake3.blake3(data, key=key).digest())


def _aad(kind: int, cid: bytes) -> bytes:
    return b"SHC1" + bytes((kind,)) + cid


_AAD_HEAD = [b"SHC1" + bytes((kind,)) for kind in range(256)]  # _aad's first five bytes, by kind


class Sealer:
    """Compress-then-encrypt for one machine key. Holds reusable zstd contexts; not thread-safe."""

    def __init__(self, keys: MachineKeys) -> None:
        self.keys = keys
        self._aes = AESGCM(keys.enc_key)
        self._zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self._zd = zstandard.ZstdDecompressor()

    def _compressible(self, data: bytes | memoryview) -> bool:
        """False when samples from the start, middle and end of a large chunk all fail to shrink by 1/32:
        incompressible data (media, archives, encrypted files) then costs a few small compressions, not one
        over the whole chunk."""
        n = len(data)
        if n < SAMPLE_FROM:
            return True
        for start in (0, n // 2 - SAMPLE // 2, n - SAMPLE):
            piece = data[start:start + SAMPLE]
            if len(self._zc.compress(piece)) < SAMPLE - SAMPLE // 32:
                return True
        return False

    def record(self, data: bytes | memoryview) -> bytes:
        """What is encrypted: the compression id, then the data compressed (when that saves 1/32) or as it is."""
        body = self._zc.compress(data) if len(data) >= 64 and self._compressible(data) else b""
        if body and len(body) < len(data) - len(data) // 32:
            return bytes((COMP_ZSTD,)) + body
        return bytes((COMP_NONE,)) + data  # one copy, from any buffer

    def seal_into(self, kind: int, cid: bytes, record: bytes, out: memoryview) -> None:
        """Seal a `record` into `out`, which is exactly NONCE + len(record) + TAG bytes (a place in a pack)."""
        nonce = os.urandom(NONCE)
        out[:NONCE] = nonce
        self._aes.encrypt_into(nonce, record, _aad(kind, cid), out[NONCE:])

    def seal(self, kind: int, cid: bytes, data: bytes | memoryview) -> bytes:
        record = self.record(data)
        nonce = os.urandom(NONCE)
        return nonce + self._aes.encrypt(nonce, record, _aad(kind, cid))

    def open(self, kind: int, cid: bytes, blob: bytes | memoryview, verify_id: bool = True) -> bytes:
        """Decrypt, decompress and verify that the plaintext hashes to `cid`; IntegrityError otherwise.

        Written out in one function: a restore of many small files calls it once per file."""
        if len(blob) < OVERHEAD:
            raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} is truncated")
        view = memoryview(blob)
        try:
            plain = self._aes.decrypt(view[:NONCE], view[NONCE:], _AAD_HEAD[kind] + cid)
        except InvalidTag:
            raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} does not authenticate")
        comp = plain[0]
        if comp == COMP_ZSTD:
            try:
                data = self._zd.decompress(memoryview(plain)[1:], max_output_size=MAX_PLAIN)
            except zstandard.ZstdError as exc:
                raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} does not decompress: {exc}")
        elif comp == COMP_NONE:
            data = plain[1:]
        else:
            raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} has unknown compression {comp}")
        if verify_id and blake3.blake3(data, key=self.keys.tree_id_key if kind == CHUNK_TREE
                                       else self.keys.id_key).digest() != cid:
            raise_error("IntegrityError", what=f"chunk {cid.hex()[:16]} content does not match its id")
        return data
