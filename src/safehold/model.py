"""Value types shared by agent, vault and CLI: ids, machines, credentials, recovery points, jobs.

Plain frozen data only; no I/O and no behaviour beyond formatting.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

ChunkId = NewType("ChunkId", bytes)  # 32-byte keyed BLAKE3 of a chunk's plaintext
PackId = NewType("PackId", str)  # 64 hex digits: BLAKE3 of the pack's bytes
MachineId = NewType("MachineId", str)
VaultId = NewType("VaultId", str)
RecoveryPointId = NewType("RecoveryPointId", str)

CHUNK_DATA = 0
CHUNK_TREE = 1


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


@dataclass(frozen=True)
class ChunkLocation:
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
