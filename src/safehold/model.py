"""Value types shared by agent, vault and CLI: ids, machines, credentials, recovery points, jobs.

Plain frozen data only; no I/O and no behaviour beyond formatting.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, NewType

ChunkId = NewType("ChunkId", bytes)  # 32-byte keyed BLAKE3 of a chunk's plaintext
PackId = NewType("PackId", str)  # 64 hex digits: BLAKE3 of the pack's bytes
MachineId = NewType("MachineId", str)
VaultId = NewType("VaultId", str)
RecoveryPointId = NewType("RecoveryPointId", str)

CHUNK_DATA = 0
CHUNK_TREE = 1
ID_SIZE = 32
JOIN_SLICE = 4096


def join_ids(ids: list[bytes]) -> bytes:
    """`b"".join(ids)` in slices: a join of n items holds n buffer views of 80 bytes each while it works, which
    is 16 MB for 200,000 ids (more than the joined result)."""
    if len(ids) <= JOIN_SLICE:
        return b"".join(ids)
    out = io.BytesIO()
    for i in range(0, len(ids), JOIN_SLICE):
        out.write(b"".join(ids[i:i + JOIN_SLICE]))
    return out.getvalue()


class PackedIds:
    """Distinct chunk ids in ascending order, held as one bytes object of 32 bytes per id: a recovery point's
    references without an object per id (200,000 ids: 6.4 MB instead of about 22 MB as a set)."""

    __slots__ = ("data",)

    def __init__(self, ids: Iterable[bytes]) -> None:
        self.data = join_ids(sorted(ids if isinstance(ids, (set, frozenset)) else set(ids)))

    @classmethod
    def verified(cls, data: bytes) -> PackedIds:
        """Ids joined by someone else (a vault's listing): ValueError unless whole and strictly ascending."""
        if len(data) % ID_SIZE:
            raise ValueError("an id list is not a whole number of 32-byte ids")
        for i in range(ID_SIZE, len(data), ID_SIZE):
            if data[i - ID_SIZE:i] >= data[i:i + ID_SIZE]:
                raise ValueError("an id list is not in ascending order")
        out = cls(())
        out.data = data
        return out

    def __len__(self) -> int:
        return len(self.data) // ID_SIZE

    def __iter__(self) -> Iterator[ChunkId]:
        data = self.data
        return (ChunkId(data[i:i + ID_SIZE]) for i in range(0, len(data), ID_SIZE))

    def _place(self, cid: bytes) -> tuple[bool, int]:
        """Whether `cid` is here, and the index it has or would have (binary search over the sorted ids)."""
        lo, hi = 0, len(self)
        data = self.data
        while lo < hi:
            mid = (lo + hi) // 2
            here = data[mid * ID_SIZE:(mid + 1) * ID_SIZE]
            if here == cid:
                return True, mid
            if here < cid:
                lo = mid + 1
            else:
                hi = mid
        return False, lo

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, bytes) and len(cid) == ID_SIZE and self._place(cid)[0]

    def with_id(self, cid: ChunkId) -> PackedIds:
        """These ids and `cid` (this object when it is among them already)."""
        found, at = self._place(cid)
        if found:
            return self
        out = PackedIds(())
        out.data = self.data[:at * ID_SIZE] + cid + self.data[at * ID_SIZE:]
        return out


class JobStatus(enum.StrEnum):
    RUNNING = "Running"
    COMPLETED = "Completed"
    WARNINGS = "CompletedWithWarnings"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


@dataclass(frozen=True)
class VaultInfo:
    vault_id: VaultId
    name: str
    version: str
    max_machines: int


@dataclass(frozen=True)
class MachineInfo:
    machine_id: MachineId
    hostname: str
    os_machine_id: str
    agent_version: str


class ChunkLocation(NamedTuple):
    """Where a chunk lies: a tuple, because a restore holds one per chunk (cheap to build, 72 bytes)."""

    pack_id: PackId
    offset: int
    length: int
    kind: int


@dataclass(frozen=True)
class PackEntry:
    chunk_id: ChunkId
    kind: int
    offset: int
    length: int


@dataclass(frozen=True)
class BackupStats:
    files: int = 0
    dirs: int = 0
    other: int = 0
    bytes_scanned: int = 0
    bytes_read: int = 0
    chunks_new: int = 0
    bytes_new_stored: int = 0
    packs_uploaded: int = 0
    failed_files: int = 0
    duration_s: float = 0.0


@dataclass(frozen=True)
class RecoveryPoint:
    rp_id: RecoveryPointId
    machine_id: MachineId
    created_ns: int
    root: ChunkId
    status: JobStatus
    stats: BackupStats = field(default_factory=BackupStats)
    sealed_meta: bytes = b""  # host name, paths, job id: encrypted by the agent, opaque to the vault
    keep_until_ns: int | None = None  # an on-demand point: retention keeps it at least until then


@dataclass(frozen=True)
class JobRecord:
    """One job of an agent as the vault keeps it (the agent's history is the source; it reports each job)."""

    job_id: str
    kind: str  # backup | restore
    trigger: str  # manual | scheduled
    started_ns: int
    ended_ns: int | None
    status: JobStatus
    files: int = 0
    bytes: int = 0
    warnings: int = 0
    recovery_point: str | None = None
    error_id: str | None = None
    error_text: str | None = None
