"""The small interfaces the engines depend on: blob storage, the vault as the agent sees it, the clock.

Adapters implement them (vault/blobstore.py, vault/service.py in-process, agent/remote.py over HTTPS);
engines never pick one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Protocol

from safehold.formats.credentials import VaultCredentials
from safehold.formats.policy import Retention
from safehold.model import (
    BackupStats,
    ChunkId,
    ChunkLocation,
    JobRecord,
    JobStatus,
    MachineId,
    MachineInfo,
    PackEntry,
    PackId,
    RecoveryPoint,
    VaultInfo,
)


class Clock(Protocol):
    def now_ns(self) -> int: ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()


class BlobStore(Protocol):
    """Immutable named blobs. `put` of an existing name with the same bytes is a no-op."""

    def put(self, name: str, data: bytes | memoryview) -> None: ...
    def get(self, name: str) -> bytes: ...
    def get_range(self, name: str, offset: int, length: int) -> bytes: ...
    def size(self, name: str) -> int | None: ...
    def delete(self, name: str) -> None: ...
    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...


class VaultClient(Protocol):
    """Everything the agent asks of a vault. Raises `SafeholdError` with catalog codes on refusal."""

    def info(self) -> VaultInfo: ...

    # registration and keys
    def register(self, creds: VaultCredentials, machine: MachineInfo, wrapped_key: bytes, key_verifier: str,
                 key_proof: bytes | None) -> str:
        """Consume a credentials file, record the machine; returns the machine's access token.

        A machine the vault knows already is re-registered only with `key_proof` (docs/protocol.md).
        """
        ...

    def wrapped_key(self, machine_id: MachineId) -> bytes: ...

    # restoring another machine's data (a credentials file, then proof of that machine's key)
    def recovery_source(self, creds: VaultCredentials, source: str, grantee: MachineId) -> tuple[MachineInfo, bytes]:
        """The machine named `source` and its wrapped key; the credentials file is checked, not used up."""
        ...

    def grant_recovery(self, creds: VaultCredentials, source: MachineId, grantee: MachineId, key_proof: bytes) -> str:
        """A read-only token for `source`'s data; uses the credentials file up."""
        ...

    # backup sessions
    def known_chunks(self, machine_id: MachineId) -> Iterable[ChunkId]: ...
    def begin_session(self, machine_id: MachineId) -> str: ...
    def chunk_epoch(self, machine_id: MachineId) -> int:
        """Removals from the machine's chunk index so far (docs/retention.md, "Chunk epoch")."""
        ...
    def put_pack(self, machine_id: MachineId, session: str, pack_id: PackId, data: bytes | memoryview,
                 entries: list[PackEntry]) -> None: ...
    def commit(self, machine_id: MachineId, session: str, root: ChunkId, status: JobStatus,
               stats: BackupStats, refs: Iterable[ChunkId], sealed_meta: bytes,
               keep_until_ns: int | None = None) -> RecoveryPoint:
        """Record the session's recovery point; `keep_until_ns` keeps an on-demand point at least until then."""
        ...
    def abort_session(self, machine_id: MachineId, session: str) -> None: ...
    def forget_chunks(self, machine_id: MachineId, ids: Iterable[ChunkId]) -> int:
        """Drop damaged chunks from the index; the next backup that meets their data stores it again."""
        ...

    # retention (the vault enforces it: expiry and garbage collection need no key)
    def set_retention(self, machine_id: MachineId, rules: Retention) -> None: ...
    def retention(self, machine_id: MachineId) -> Retention | None: ...

    # the job history
    def report_jobs(self, machine_id: MachineId, jobs: list[JobRecord]) -> None:
        """Record finished jobs of the machine at the vault; reporting one again replaces it."""
        ...

    def jobs(self, machine_id: MachineId, limit: int = 100) -> list[JobRecord]: ...

    # reading
    def recovery_points(self, machine_id: MachineId) -> list[RecoveryPoint]: ...
    def locate(self, machine_id: MachineId, ids: Iterable[ChunkId]) -> dict[ChunkId, ChunkLocation]: ...
    def read(self, machine_id: MachineId, pack_id: PackId, offset: int, length: int) -> bytes: ...
    def packs(self, machine_id: MachineId) -> list[tuple[PackId, int]]: ...
    def read_pack(self, machine_id: MachineId, pack_id: PackId) -> bytes: ...
    def index(self, machine_id: MachineId) -> Iterator[tuple[ChunkId, ChunkLocation]]: ...
    def refs(self, machine_id: MachineId, rp_id: str) -> list[ChunkId]: ...
