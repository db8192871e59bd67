"""Byte layouts of the vault protocol's bodies (docs/protocol.md): pack uploads, id lists, chunk locations,
commits and recovery points. Shared by the vault server and the agent's client; pure encoding, no I/O.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterable
from dataclasses import asdict, fields
from typing import Any, NoReturn

import msgspec

from safehold import model
from safehold.errors import raise_error
from safehold.model import (
    BackupStats,
    ChunkId,
    ChunkLocation,
    JobRecord,
    JobStatus,
    MachineId,
    PackedIds,
    PackEntry,
    PackId,
    RecoveryPoint,
    RecoveryPointId,
)

API = "/v1"
PACK_MEDIA_TYPE = "application/x-safehold-pack"
MSGPACK_MEDIA_TYPE = "application/msgpack"
MAX_PACK_BODY = 256 * 1024 * 1024
MAX_IDS_BODY = 64 * 1024 * 1024
MAX_PACK_ENTRIES = 65_536  # agents close a pack at this many chunks, whatever its size
HOSTNAME_HEADER = "Safehold-Hostname"

_ENTRY = struct.Struct("<32sBQI")
_LOCATION = struct.Struct("<32s32sQIB")
_COUNT = struct.Struct("<I")
ENTRY_SIZE = _ENTRY.size
LOCATION_SIZE = _LOCATION.size
_STATS_FIELDS = frozenset(f.name for f in fields(BackupStats))


def _bad(what: str) -> NoReturn:
    raise_error("InvalidArgument", what=what)


# ---- pack uploads ---------------------------------------------------------------------------------

def pack_upload_header(entries: list[PackEntry]) -> bytes:
    return _COUNT.pack(len(entries)) + b"".join(
        _ENTRY.pack(e.chunk_id, e.kind, e.offset, e.length) for e in entries)


def header_size(prefix: bytes) -> int:
    """Total header length, read from its first 4 bytes."""
    count: int = _COUNT.unpack_from(prefix)[0]
    if count > MAX_PACK_ENTRIES:
        _bad(f"a pack upload lists more than {MAX_PACK_ENTRIES} entries")
    return _COUNT.size + count * ENTRY_SIZE


def parse_entries(header: bytes) -> list[PackEntry]:
    (count,) = _COUNT.unpack_from(header)
    if len(header) != _COUNT.size + count * ENTRY_SIZE:
        _bad("the pack upload header is cut short")
    return [PackEntry(ChunkId(cid), kind, off, length)
            for cid, kind, off, length in _ENTRY.iter_unpack(header[_COUNT.size:])]


# ---- id lists and locations ------------------------------------------------------------------------

def join_ids(ids: list[ChunkId] | list[bytes]) -> bytes:
    return model.join_ids(list(ids))


def split_ids(data: bytes) -> list[ChunkId]:
    if len(data) % 32:
        _bad("an id list is not a whole number of 32-byte ids")
    return [ChunkId(data[i:i + 32]) for i in range(0, len(data), 32)]


def sorted_ids(data: bytes) -> PackedIds:
    """A vault's listing of ids in ascending order, kept as it came (no object per id)."""
    try:
        return PackedIds.verified(data)
    except ValueError as exc:
        _bad(str(exc))


def location_record(cid: ChunkId, loc: ChunkLocation) -> bytes:
    return _LOCATION.pack(cid, bytes.fromhex(loc.pack_id), loc.offset, loc.length, loc.kind)


def parse_locations(data: bytes) -> list[tuple[ChunkId, ChunkLocation]]:
    if len(data) % LOCATION_SIZE:
        _bad("a location list is cut short")
    return [(ChunkId(cid), ChunkLocation(PackId(pid.hex()), off, length, kind))
            for cid, pid, off, length, kind in _LOCATION.iter_unpack(data)]


# ---- commits and recovery points ----------------------------------------------------------------------

class Commit(msgspec.Struct, forbid_unknown_fields=True):
    root: bytes
    status: str
    stats: dict[str, int | float]
    sealed_meta: bytes
    refs: bytes
    keep_until_ns: int | None = None


def encode_commit(root: ChunkId, status: JobStatus, stats: BackupStats, refs: Iterable[ChunkId],
                  sealed_meta: bytes, keep_until_ns: int | None = None) -> bytes:
    joined = refs.data if isinstance(refs, PackedIds) else model.join_ids(list(refs))
    return msgspec.msgpack.encode(Commit(root, str(status), asdict(stats), sealed_meta, joined, keep_until_ns))


def decode_commit(data: bytes) -> tuple[ChunkId, JobStatus, BackupStats, list[ChunkId], bytes, int | None]:
    try:
        c = msgspec.msgpack.decode(data, type=Commit)
        status = JobStatus(c.status)
        if len(c.root) != 32 or not set(c.stats) <= _STATS_FIELDS or \
                not all(math.isfinite(v) and v >= 0 for v in c.stats.values()):
            raise ValueError("bad root or statistics")
        stats = BackupStats(**c.stats)  # type: ignore[arg-type]
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
        _bad(f"the commit is malformed ({exc})")
    return ChunkId(c.root), status, stats, split_ids(c.refs), c.sealed_meta, c.keep_until_ns


def rp_to_json(rp: RecoveryPoint) -> dict[str, Any]:
    return {"rp_id": rp.rp_id, "machine_id": rp.machine_id, "created_ns": rp.created_ns, "root": rp.root.hex(),
            "status": str(rp.status), "stats": asdict(rp.stats),
            "sealed_meta": base64.b64encode(rp.sealed_meta).decode(), "keep_until_ns": rp.keep_until_ns}


def job_to_json(j: JobRecord) -> dict[str, Any]:
    return {**asdict(j), "status": str(j.status)}


def job_from_json(doc: dict[str, Any]) -> JobRecord:
    return JobRecord(**{**doc, "status": JobStatus(doc["status"])})


def rp_from_json(doc: dict[str, Any]) -> RecoveryPoint:
    return RecoveryPoint(
        rp_id=RecoveryPointId(str(doc["rp_id"])), machine_id=MachineId(str(doc["machine_id"])),
        created_ns=int(doc["created_ns"]), root=ChunkId(bytes.fromhex(doc["root"])),
        status=JobStatus(doc["status"]),
        stats=BackupStats(**{k: v for k, v in doc["stats"].items() if k in _STATS_FIELDS}),
        sealed_meta=base64.b64decode(doc["sealed_meta"]),
        keep_until_ns=None if doc.get("keep_until_ns") is None else int(doc["keep_until_ns"]))
