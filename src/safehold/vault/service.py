"""The vault service: credentials, registration, pack intake, the chunk index and recovery points.

It holds no key and never reads a chunk's contents. Embedded mode calls it in-process; the vault server
(later) puts HTTP in front of the same object.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import uuid
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import sqlalchemy as sa

from safehold import __version__
from safehold.errors import raise_error
from safehold.formats import credentials as credfmt
from safehold.formats import policy
from safehold.formats.credentials import VaultCredentials
from safehold.formats.pack import pack_id as compute_pack_id
from safehold.formats.policy import Retention
from safehold.model import (
    ID_SIZE,
    BackupStats,
    ChunkId,
    ChunkLocation,
    JobRecord,
    JobStatus,
    MachineId,
    MachineInfo,
    PackedIds,
    PackEntry,
    PackId,
    RecoveryPoint,
    RecoveryPointId,
    VaultId,
    VaultInfo,
)
from safehold.ports import BlobStore, Clock, SystemClock
from safehold.vault import catalog as t
from safehold.vault.blobstore import ObjectBlobStore

VAULT_FILE = "vault.json"
CATALOG_FILE = "catalog.sqlite"
VAULT_FORMAT = "safehold-vault"
FORMAT_VERSION = 1
DEFAULT_MAX_MACHINES = 50
DAY_NS = 86_400 * 10**9
SCAN_FROM = 20_000  # a commit referencing this many chunks checks them in one pass over the index
SCAN_BATCH = 4096  # index rows read at once by that pass
LOCATE_SCAN_FROM = 10_000  # locate: from this many ids, ask whether one pass over the machine's index is cheaper
LOCATE_SCAN_SHARE = 3  # ... which it is when the ids are at least a third of the index
MACHINE_TOKEN_PREFIX = "shm_"  # noqa: S105 - a prefix, not a secret
ADMIN_TOKEN_PREFIX = "sha_"  # noqa: S105
GRANT_TOKEN_PREFIX = "shr_"  # noqa: S105
GRANT_HOURS = 24


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def pack_name(machine_id: str, pack_id: str) -> str:
    return f"packs/{machine_id}/{pack_id[:2]}/{pack_id}"


def _postgres_url(url: str) -> str:
    """A catalog URL as given to `vault init --catalog`, checked and with psycopg as the driver."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        parsed = None
    if parsed is None or parsed.drivername not in ("postgresql", "postgresql+psycopg") or not parsed.database:
        raise_error("InvalidArgument", what="--catalog must be a PostgreSQL URL: "
                                            "postgresql+psycopg://USER@HOST[:PORT]/DATABASE")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _shown(url: str) -> str:
    """A catalog URL fit for messages: the password, if any, masked."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _db_reason(exc: sa.exc.DBAPIError) -> str:
    return (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]


def _recovery_point(r: Any) -> RecoveryPoint:
    return RecoveryPoint(
        rp_id=RecoveryPointId(r.rp_id), machine_id=MachineId(r.machine_id), created_ns=r.created_ns,
        root=ChunkId(bytes(r.root)), status=JobStatus(r.status), stats=BackupStats(**r.stats),
        sealed_meta=bytes(r.sealed_meta), keep_until_ns=r.keep_until_ns)


_RUN = 64 * ID_SIZE  # ids compared at once where two sorted lists agree


def _not_in(base: bytes, ids: bytes) -> list[ChunkId]:
    """The ids of `ids` that `base` lacks; both are sorted 32-byte ids. One merge over the two, skipping runs
    where they agree 64 ids at a time (a backup after a small change: nearly all of it), and no object per id
    of `base` (a set of them took 16 MB for 200,000 ids)."""
    out: list[ChunkId] = []
    i = j = 0
    nb, ni = len(base), len(ids)
    while j < ni:
        if ids[j:j + _RUN] == base[i:i + _RUN]:
            i += _RUN
            j += _RUN
            continue
        cid = ids[j:j + ID_SIZE]
        while i < nb and base[i:i + ID_SIZE] < cid:
            i += ID_SIZE
        if i < nb and base[i:i + ID_SIZE] == cid:
            i += ID_SIZE
        else:
            out.append(ChunkId(cid))
        j += ID_SIZE
    return out


def lock_machine(c: sa.Connection, machine_id: str) -> None:
    """Serialize, until this transaction ends, the changes that decide whether a chunk is in use: commits, pack
    intake and housekeeping of one machine. A write to the machine's row: a row lock on PostgreSQL, the write
    lock on SQLite (taken first, so that the transaction never has to upgrade a stale read)."""
    c.execute(sa.update(t.machines).where(t.machines.c.machine_id == machine_id)
              .values(registered_ns=t.machines.c.registered_ns))


def read_chunk_epoch(c: sa.Connection, machine_id: str) -> int | None:
    """The machine's count of removals from its chunk index; None for a machine the catalog does not hold."""
    epoch = c.execute(sa.select(t.machines.c.chunk_epoch).where(t.machines.c.machine_id == machine_id)
                      ).scalar_one_or_none()
    return None if epoch is None else int(epoch)


def bump_chunk_epoch(c: sa.Connection, machine_id: str) -> None:
    """Count a removal from the machine's chunk index (a chunk condemned, swept or forgotten), in the transaction
    that makes it: a point committed at an older count may name chunks that are gone (docs/retention.md)."""
    m = t.machines.c
    c.execute(sa.update(t.machines).where(m.machine_id == machine_id).values(chunk_epoch=m.chunk_epoch + 1))


MAX_JOBS_PER_REPORT = 1000
JOB_KINDS = frozenset({"backup", "restore", "mount"})
JOB_TRIGGERS = frozenset({"manual", "scheduled"})
_JOB_ID = re.compile(r"[0-9a-f]{32}")
_ERROR_ID = re.compile(r"(0x[0-9A-F]{1,8}|[0-9]{1,9})")


def _job_row(machine_id: MachineId, j: JobRecord, now_ns: int) -> dict[str, Any]:
    """A reported job, checked field by field: the report comes from the network."""
    if not _JOB_ID.fullmatch(j.job_id) or j.kind not in JOB_KINDS or j.trigger not in JOB_TRIGGERS:
        raise_error("InvalidArgument", what="a job report with an unknown id, kind or trigger")
    if j.error_id is not None and not _ERROR_ID.fullmatch(j.error_id):
        raise_error("InvalidArgument", what="a job report with a malformed error id")
    if j.recovery_point is not None and not _JOB_ID.fullmatch(j.recovery_point):
        raise_error("InvalidArgument", what="a job report with a malformed recovery point id")
    numbers = (j.started_ns, j.ended_ns or 0, j.files, j.bytes, j.warnings)
    if any(not 0 <= n < 2**63 for n in numbers):
        raise_error("InvalidArgument", what="a job report with a number out of range")
    return {"job_id": j.job_id, "machine_id": machine_id, "kind": j.kind, "trigger": j.trigger,
            "started_ns": j.started_ns, "ended_ns": j.ended_ns, "status": str(JobStatus(j.status)),
            "files": j.files, "bytes": j.bytes, "warnings": j.warnings, "recovery_point": j.recovery_point,
            "error_id": j.error_id, "error_text": (j.error_text or "")[:2000] or None, "reported_ns": now_ns}


class VaultService:
    _open: ClassVar[weakref.WeakSet[VaultService]] = weakref.WeakSet()  # for close_all

    def __init__(self, eng: sa.Engine, blobs: BlobStore, url: str, clock: Clock | None = None) -> None:
        VaultService._open.add(self)
        self.eng = eng
        self.blobs = blobs
        self.url = url
        self.clock = clock or SystemClock()
        self.tls_fingerprint: str | None = None  # of the server certificate, when the vault is served
        with eng.connect() as c:
            row = c.execute(sa.select(t.vault)).one_or_none()
        if row is None:
            raise_error("CatalogCorrupt", reason="the vault table is empty")
        self.vault_id = VaultId(row.vault_id)
        self.name: str = row.name

    def close(self) -> None:
        """Close the catalog's database connections (the service must not be used afterwards)."""
        self.eng.dispose()

    @classmethod
    def close_all(cls) -> None:
        """Close every vault this process opened: at the end of a command, so that SQLite writes its log back
        into the catalog (it does on the last close) then, and not whenever the interpreter gets to it."""
        for svc in list(cls._open):
            svc.close()

    # ---- creation and opening of an embedded (folder) vault ------------------------------------

    @classmethod
    def init_folder(cls, folder: Path, name: str | None = None, max_machines: int = DEFAULT_MAX_MACHINES,
                    clock: Clock | None = None, catalog_url: str | None = None) -> VaultService:
        """Create a vault in `folder`: its settings file (vault.json), its blobs and its catalog.

        The catalog is the SQLite file catalog.sqlite in the folder, or, with `catalog_url`
        (postgresql+psycopg://USER@HOST[:PORT]/DATABASE), an empty PostgreSQL database that no other vault
        uses; vault.json then holds that URL. It is written 0600, but a password is better kept out of it, in
        ~/.pgpass or the file PGPASSFILE names, which libpq reads for a URL without one.
        """
        folder = folder.absolute()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise_error("VaultExists", path=str(folder))
        if not 1 <= max_machines <= 100_000:
            raise_error("InvalidArgument", what="--max-machines must be between 1 and 100000")
        url = f"sqlite:///{folder / CATALOG_FILE}" if catalog_url is None else _postgres_url(catalog_url)
        eng = t.engine(url)
        try:
            if catalog_url is not None:
                try:
                    with eng.connect() as c:
                        empty = t.is_empty(c)
                except sa.exc.DBAPIError as exc:
                    raise_error("InvalidArgument", what=f"--catalog {_shown(url)}: {_db_reason(exc)}")
                if not empty:  # one database per vault: another vault's catalog is never taken over
                    raise_error("VaultExists", path=_shown(url))
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            t.create(eng)
            vault_id = uuid.uuid4().hex
            with eng.begin() as c:
                t.lock(c)
                if c.execute(sa.select(sa.func.count()).select_from(t.vault)).scalar_one():
                    raise_error("VaultExists", path=_shown(url))
                c.execute(sa.insert(t.vault).values(
                    vault_id=vault_id, name=name or folder.name, created_ns=(clock or SystemClock()).now_ns(),
                    max_machines=max_machines, format_version=FORMAT_VERSION))
        finally:
            eng.dispose()
        doc: dict[str, Any] = {"format": VAULT_FORMAT, "version": FORMAT_VERSION, "vault_id": vault_id}
        if catalog_url is None:
            doc["catalog"] = CATALOG_FILE
            (folder / CATALOG_FILE).chmod(0o600)  # token digests and wrapped keys: owner only
        else:
            doc["catalog_url"] = url
        doc["blobs"] = "blobs"
        fd = os.open(folder / VAULT_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # may hold a password
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
        return cls.open_folder(folder, clock)

    @staticmethod
    def _folder_catalog(folder: Path) -> tuple[dict[str, Any], str, Path]:
        """vault.json of the vault in `folder`: the document, the catalog's URL, the blob folder."""
        try:
            doc = json.loads((folder / VAULT_FILE).read_text())
            if doc["format"] != VAULT_FORMAT or doc["version"] != FORMAT_VERSION:
                raise ValueError("not a safehold vault of a known version")
            catalog_url = doc.get("catalog_url")
            catalog_path = None if catalog_url is not None else folder / str(doc["catalog"])
            blob_path = folder / str(doc["blobs"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise_error("VaultNotFound", path=str(folder))
        if catalog_path is None:
            return doc, str(catalog_url), blob_path
        if not catalog_path.is_file():
            raise_error("CatalogCorrupt", reason=f"{catalog_path} is missing")
        return doc, f"sqlite:///{catalog_path}", blob_path

    @classmethod
    def open_folder(cls, folder: Path, clock: Clock | None = None) -> VaultService:
        """Open the vault in `folder`. Reads only: vault servers open one folder (and database) concurrently."""
        folder = folder.absolute()
        doc, url, blob_path = cls._folder_catalog(folder)
        eng = t.engine(url)
        try:
            try:
                t.check_current(eng)
                svc = cls(eng, ObjectBlobStore.local(blob_path), folder.as_uri(), clock)
            except sa.exc.OperationalError as exc:
                if url.startswith("sqlite:"):
                    raise_error("CatalogCorrupt", reason=_db_reason(exc))
                raise_error("CatalogUnavailable", reason=f"{_shown(url)}: {_db_reason(exc)}")
            except sa.exc.DBAPIError as exc:
                where = "" if url.startswith("sqlite:") else f"{_shown(url)}: "
                raise_error("CatalogCorrupt", reason=where + _db_reason(exc))
            if svc.vault_id != doc["vault_id"]:
                raise_error("CatalogCorrupt", reason="the catalog belongs to another vault")
        except BaseException:
            eng.dispose()
            raise
        return svc

    @classmethod
    def migrate_folder(cls, folder: Path) -> tuple[str | None, str]:
        """Bring the catalog of the vault in `folder` to this safehold's schema; (revision before, after).

        Run it once, with the vault's servers stopped; a catalog already current is left as it is."""
        folder = folder.absolute()
        doc, url, _ = cls._folder_catalog(folder)
        eng = t.engine(url)
        try:
            try:
                before, after = t.upgrade(eng)
                with eng.connect() as c:
                    vault_id = c.execute(sa.select(t.vault.c.vault_id)).scalar_one_or_none()
            except sa.exc.DBAPIError as exc:
                where = "" if url.startswith("sqlite:") else f"{_shown(url)}: "
                raise_error("CatalogCorrupt", reason=where + _db_reason(exc))
        finally:
            eng.dispose()
        if vault_id != doc["vault_id"]:
            raise_error("CatalogCorrupt", reason="the catalog belongs to another vault")
        return before, after

    # ---- administration -------------------------------------------------------------------------

    def info(self) -> VaultInfo:
        with self.eng.connect() as c:
            row = c.execute(sa.select(t.vault)).one()
        return VaultInfo(VaultId(row.vault_id), row.name, __version__, row.max_machines)

    def set_max_machines(self, limit: int) -> None:
        if not 1 <= limit <= 100_000:
            raise_error("InvalidArgument", what="--max-machines must be between 1 and 100000")
        with self.eng.begin() as c:
            c.execute(sa.update(t.vault).values(max_machines=limit))

    def issue_credentials(self, valid_days: float = credfmt.DEFAULT_VALID_DAYS) -> VaultCredentials:
        """A new credentials file; every older one that was not used yet stops being valid."""
        if not 0 < valid_days <= 365:
            raise_error("InvalidArgument", what="--valid-days must be more than 0 and at most 365")
        now = self.clock.now_ns()
        public = self.public_url()
        if public is not None and self.tls_fingerprint is None:
            raise_error("InvalidArgument", what="the vault has a public URL but no TLS certificate")
        creds = VaultCredentials(
            vault_id=self.vault_id, vault_name=self.name, url=public or self.url,
            tls_fingerprint=self.tls_fingerprint if public else None,
            credential_id=uuid.uuid4().hex, secret=os.urandom(32),
            issued_ns=now, expires_ns=now + int(valid_days * DAY_NS))
        with self.eng.begin() as c:
            c.execute(sa.update(t.credentials).where(t.credentials.c.state == "active")
                      .values(state="superseded"))
            c.execute(sa.insert(t.credentials).values(
                credential_id=creds.credential_id, secret_digest=credfmt.secret_digest(creds.secret),
                issued_ns=creds.issued_ns, expires_ns=creds.expires_ns, state="active"))
        return creds

    def machines(self) -> list[dict[str, Any]]:
        with self.eng.connect() as c:
            rows = c.execute(sa.select(t.machines.c.machine_id, t.machines.c.hostname,
                                       t.machines.c.registered_ns, t.machines.c.agent_version)).all()
        return [dict(r._mapping) for r in rows]

    # ---- registration -----------------------------------------------------------------------------

    def register(self, creds: VaultCredentials, machine: MachineInfo, wrapped_key: bytes, key_verifier: str,
                 key_proof: bytes | None) -> str:
        """Consume a credentials file and record the machine; returns its new token.

        A machine id the vault knows is taken over only with `key_proof`, the subkey whose SHA-256 the first
        registration left as `key_verifier`: only the holder of the first passphrase can re-register a machine.
        """
        if creds.vault_id != self.vault_id:
            raise_error("VaultCredentialsInvalid", reason="the file was not issued by this vault")
        now = self.clock.now_ns()
        if len(key_verifier) != 64 or not all(ch in "0123456789abcdef" for ch in key_verifier):
            raise_error("InvalidArgument", what="key_verifier must be 64 lowercase hex digits")
        token = MACHINE_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.eng.begin() as c:
            t.lock(c)  # the machine count and the file's state hold until this registration commits
            self._usable_credentials(c, creds, now)
            existing = c.execute(sa.select(t.machines.c.machine_id, t.machines.c.key_verifier).where(
                t.machines.c.machine_id == machine.machine_id)).one_or_none()
            if existing is not None and (
                    key_proof is None or existing.key_verifier is None or not secrets.compare_digest(
                        hashlib.sha256(key_proof).hexdigest(), existing.key_verifier)):
                raise_error("WrongPassphrase",
                            detail="this machine is registered already; re-registering it needs the passphrase "
                                   "first used" if existing.key_verifier is not None else
                                   "this machine was registered before key proofs existed; register it as a new "
                                   "machine")
            limit = c.execute(sa.select(t.vault.c.max_machines)).scalar_one()
            count = c.execute(sa.select(sa.func.count()).select_from(t.machines)).scalar_one()
            if existing is None and count >= limit:
                raise_error("MachineLimitReached", limit=limit)
            values = {"hostname": machine.hostname, "os_machine_id": machine.os_machine_id,
                      "agent_version": machine.agent_version, "registered_ns": now,
                      "token_digest": _digest(token), "wrapped_key": wrapped_key, "key_verifier": key_verifier}
            if existing is None:
                c.execute(sa.insert(t.machines).values(machine_id=machine.machine_id, **values))
            else:
                c.execute(sa.update(t.machines).where(t.machines.c.machine_id == machine.machine_id)
                          .values(**values))
            # Only one registration may consume the file, even when two arrive at once on two vault servers.
            taken = c.execute(sa.update(t.credentials).where(t.credentials.c.credential_id == creds.credential_id,
                                                             t.credentials.c.state == "active")
                              .values(state="used", used_by=machine.machine_id),
                              execution_options={"preserve_rowcount": True}).rowcount
            if taken != 1:
                raise_error("VaultCredentialsInvalid", reason="this file was already used to register")
        return token

    def _usable_credentials(self, c: sa.Connection, creds: VaultCredentials, now: int) -> None:
        """The file must be this vault's, known, the newest, unused and not expired."""
        if creds.vault_id != self.vault_id:
            raise_error("VaultCredentialsInvalid", reason="the file was not issued by this vault")
        row = c.execute(sa.select(t.credentials).where(
            t.credentials.c.credential_id == creds.credential_id)).one_or_none()
        if row is None or not secrets.compare_digest(row.secret_digest, credfmt.secret_digest(creds.secret)):
            raise_error("VaultCredentialsInvalid", reason="the vault does not know this file")
        if row.state == "superseded":
            raise_error("VaultCredentialsInvalid", reason="a newer credentials file was issued after this one")
        if row.state == "used":
            raise_error("VaultCredentialsInvalid", reason="this file was already used")
        if now >= row.expires_ns:
            raise_error("VaultCredentialsInvalid", reason="the file has expired")

    # ---- restoring another machine's data ------------------------------------------------------------

    def recovery_source(self, creds: VaultCredentials, source: str, grantee: MachineId) -> tuple[MachineInfo, bytes]:
        """The machine named `source` (id, id prefix of 8+ digits, or host name) and its wrapped key, for a
        machine of this vault holding a usable credentials file. The file is not used up yet."""
        with self.eng.connect() as c:
            self._usable_credentials(c, creds, self.clock.now_ns())
            m = t.machines.c
            rows = c.execute(sa.select(m.machine_id, m.hostname, m.os_machine_id, m.agent_version, m.wrapped_key)
                             ).all()
        found = [r for r in rows if source in (r.machine_id, r.hostname) or
                 (len(source) >= 8 and r.machine_id.startswith(source))]
        if len(found) != 1:
            names = ", ".join(f"{r.hostname} ({r.machine_id[:8]})" for r in rows if r.machine_id != grantee)
            raise_error("InvalidArgument", what=f"the vault has {'no' if not found else 'several'} machine(s) "
                                                f"named {source!r}; it holds: {names or 'no other machine'}")
        r = found[0]
        return MachineInfo(MachineId(r.machine_id), r.hostname, r.os_machine_id, r.agent_version), bytes(r.wrapped_key)

    def grant_recovery(self, creds: VaultCredentials, source: MachineId, grantee: MachineId, key_proof: bytes) -> str:
        """A read-only token for `source`'s data, valid GRANT_HOURS, for the holder of its key (the proof) and
        of a credentials file, which this uses up."""
        now = self.clock.now_ns()
        token = GRANT_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.eng.begin() as c:
            self._usable_credentials(c, creds, now)
            verifier = c.execute(sa.select(t.machines.c.key_verifier).where(
                t.machines.c.machine_id == source)).scalar_one_or_none()
            if verifier is None or not secrets.compare_digest(hashlib.sha256(key_proof).hexdigest(), verifier):
                raise_error("WrongPassphrase", detail="the passphrase does not open the other machine's key")
            taken = c.execute(sa.update(t.credentials).where(t.credentials.c.credential_id == creds.credential_id,
                                                             t.credentials.c.state == "active")
                              .values(state="used", used_by=f"restore:{grantee}"[:64]),
                              execution_options={"preserve_rowcount": True}).rowcount
            if taken != 1:
                raise_error("VaultCredentialsInvalid", reason="this file was already used")
            c.execute(sa.insert(t.grants).values(token_digest=_digest(token), machine_id=source, grantee=grantee,
                                                 created_ns=now, expires_ns=now + GRANT_HOURS * 3600 * 10**9))
        return token

    def wrapped_key(self, machine_id: MachineId) -> bytes:
        with self.eng.connect() as c:
            key = c.execute(sa.select(t.machines.c.wrapped_key).where(
                t.machines.c.machine_id == machine_id)).scalar_one_or_none()
        if key is None:
            raise_error("NotRegistered", home="the vault")
        return bytes(key)

    # ---- backup sessions ----------------------------------------------------------------------------

    def known_chunks(self, machine_id: MachineId) -> PackedIds:
        """Chunks a new backup may deduplicate against, in ascending order: condemned ones (garbage about to go)
        are left out, so a session that begins now never counts on them (docs/retention.md). Joined batch by
        batch as rows come, never an object per id for the whole index."""
        c_ = t.chunks.c
        parts: list[bytes] = []
        with self.eng.connect() as c:
            result = c.execute(sa.select(c_.chunk_id).where(c_.machine_id == machine_id, c_.condemned_ns.is_(None))
                               .order_by(c_.chunk_id).execution_options(yield_per=SCAN_BATCH))
            for part in result.scalars().partitions():
                parts.append(b"".join(part))
        out = PackedIds(())
        out.data = b"".join(parts)
        return out

    def chunk_epoch(self, machine_id: MachineId) -> int:
        """The count of removals from the machine's chunk index so far. While it stays the same, every chunk that
        was indexed and live at some moment after it was read still is (docs/retention.md, "Chunk epoch")."""
        with self.eng.connect() as c:
            epoch = read_chunk_epoch(c, machine_id)
        if epoch is None:
            raise_error("NotRegistered", home="the vault")
        return epoch

    def begin_session(self, machine_id: MachineId) -> str:
        session = uuid.uuid4().hex
        with self.eng.begin() as c:
            c.execute(sa.insert(t.sessions).values(session_id=session, machine_id=machine_id,
                                                   started_ns=self.clock.now_ns()))
        return session

    def abort_session(self, machine_id: MachineId, session: str) -> None:
        with self.eng.begin() as c:
            c.execute(sa.delete(t.sessions).where(t.sessions.c.session_id == session,
                                                  t.sessions.c.machine_id == machine_id))

    def put_pack(self, machine_id: MachineId, session: str, pack_id: PackId, data: bytes | memoryview,
                 entries: list[PackEntry]) -> None:
        if compute_pack_id(data) != pack_id:
            raise_error("IntegrityError", what=f"pack {pack_id[:16]} arrived damaged")
        for e in entries:
            if e.offset < 8 or e.length <= 0 or e.offset + e.length > len(data) or len(e.chunk_id) != 32:
                raise_error("IntegrityError", what=f"pack {pack_id[:16]} lists a chunk outside the pack")
        name = pack_name(machine_id, pack_id)
        if self.blobs.size(name) != len(data):
            self.blobs.put(name, data)
        now = self.clock.now_ns()
        # Rows already there are kept (a chunk stays where it was first stored), so the same upload taken twice,
        # even at once by two vault servers, leaves one pack row and one row per chunk. Sorted: one lock order.
        rows = [(machine_id, bytes(e.chunk_id), str(pack_id), e.offset, e.length, e.kind)
                for e in sorted(entries, key=lambda e: e.chunk_id)]
        with self.eng.begin() as c:
            lock_machine(c, machine_id)
            c.execute(t.insert_ignore(t.packs, c.dialect.name).values(
                machine_id=machine_id, pack_id=pack_id, size=len(data), created_ns=now))
            c.execute(sa.update(t.packs).where(t.packs.c.machine_id == machine_id, t.packs.c.pack_id == pack_id,
                                               t.packs.c.deleted_ns.is_not(None)).values(deleted_ns=None))
            # A condemned chunk uploaded again (the session did not know it) takes the new copy: the old row
            # may be swept at any moment, the new one belongs to a running session (done by the insert).
            if rows:
                t.insert_chunk_rows(c, rows)

    def commit(self, machine_id: MachineId, session: str, root: ChunkId, status: JobStatus,
               stats: BackupStats, refs: Iterable[ChunkId], sealed_meta: bytes,
               keep_until_ns: int | None = None) -> RecoveryPoint:
        """Record the recovery point of a session. Once per session: committing it again (a retry after a lost
        answer, or the same request taken by two vault servers) returns the point recorded the first time.

        `keep_until_ns`: an on-demand point that retention keeps at least until then. Every referenced chunk
        must be in the index, condemned or not; the check and the insert hold the machine's lock, so housekeeping
        cannot sweep a chunk between them, and referenced chunks stop being condemned."""
        with self.eng.connect() as c:
            done = self._committed(c, machine_id, session)
        ordered = (refs if isinstance(refs, PackedIds) else PackedIds(refs)).with_id(root)
        rp = RecoveryPoint(
            rp_id=RecoveryPointId(uuid.uuid4().hex), machine_id=machine_id, created_ns=self.clock.now_ns(),
            root=root, status=status, stats=stats, sealed_meta=sealed_meta, keep_until_ns=keep_until_ns)
        with self.eng.begin() as c:
            if done is None:
                lock_machine(c, machine_id)
                done = self._committed(c, machine_id, session)  # committed meanwhile, by another request
            epoch = None
            if done is None:
                epoch = read_chunk_epoch(c, machine_id)
                self._check_present(c, machine_id, ordered if epoch is None
                                    else self._beyond_live_point(c, machine_id, epoch, ordered))
            if done is None and not c.execute(t.insert_ignore(t.recovery_points, c.dialect.name).values(
                    rp_id=rp.rp_id, machine_id=machine_id, created_ns=rp.created_ns, root=root,
                    status=str(status), stats=asdict(stats), sealed_meta=sealed_meta,
                    session_id=session, keep_until_ns=keep_until_ns, chunk_epoch=epoch),
                    execution_options={"preserve_rowcount": True}).rowcount:
                done = self._committed(c, machine_id, session)  # committed meanwhile, by another request
                if done is None:
                    raise_error("InvalidArgument", what="the backup session belongs to another machine")
            if done is None:
                c.execute(sa.insert(t.point_refs).values(rp_id=rp.rp_id, refs=ordered.data))
            c.execute(sa.delete(t.sessions).where(t.sessions.c.session_id == session,
                                                  t.sessions.c.machine_id == machine_id))
        return done or rp

    @staticmethod
    def _beyond_live_point(c: sa.Connection, machine_id: MachineId, epoch: int,
                           ids: PackedIds) -> PackedIds | list[ChunkId]:
        """The ids that still need checking against the index: all of them, unless a point of the machine was
        committed at the current chunk epoch. Its references were all indexed and live then, and nothing was
        removed since, so only the ids it lacks need checking (an unchanged backup: none). Called under the
        machine's lock, so the epoch cannot move before the new point is in."""
        rp = t.recovery_points.c
        newest = c.execute(sa.select(rp.rp_id).where(rp.machine_id == machine_id, rp.chunk_epoch == epoch)
                           .order_by(rp.created_ns.desc()).limit(1)).scalar_one_or_none()
        if newest is None:
            return ids
        blob = c.execute(sa.select(t.point_refs.c.refs).where(t.point_refs.c.rp_id == newest)).scalar_one()
        return _not_in(bytes(blob), ids.data)

    @staticmethod
    def _check_present(c: sa.Connection, machine_id: MachineId, ids: PackedIds | list[ChunkId]) -> None:
        """ChunkMissing unless every id is in the index; condemned ones among them are in use again."""
        c_ = t.chunks.c
        revived_all: list[bytes] = []
        if len(ids) >= SCAN_FROM:
            # Many ids: one pass over the machine's index in key order (what known_chunks reads anyway) beats
            # hundreds of IN queries. Both sides are sorted, so they are merged as rows stream in: memory stays
            # a batch of rows instead of the whole index.
            stream = c.execute(sa.select(c_.chunk_id, c_.condemned_ns).where(c_.machine_id == machine_id)
                               .order_by(c_.chunk_id).execution_options(yield_per=SCAN_BATCH))
            wanted = iter(ids)
            want = next(wanted, None)
            for raw, cond in stream:
                if want is None:
                    break
                cid = bytes(raw)  # some drivers return a memoryview
                if cid < want:
                    continue
                if cid != want:
                    break  # `want` is not in the index
                if cond is not None:
                    revived_all.append(want)
                want = next(wanted, None)
            stream.close()
            if want is not None:
                raise_error("ChunkMissing", chunk=bytes(want).hex()[:16])
        else:
            few = list(ids)
            for i in range(0, len(few), 500):
                batch = few[i:i + 500]
                rows = c.execute(sa.select(c_.chunk_id, c_.condemned_ns).where(
                    c_.machine_id == machine_id, c_.chunk_id.in_(batch))).all()
                if len(rows) != len(batch):
                    found = {bytes(r.chunk_id) for r in rows}
                    raise_error("ChunkMissing", chunk=next(cid for cid in batch if cid not in found).hex()[:16])
                revived_all += [bytes(r.chunk_id) for r in rows if r.condemned_ns is not None]
        for i in range(0, len(revived_all), 500):
            c.execute(sa.update(t.chunks).where(c_.machine_id == machine_id,
                                                c_.chunk_id.in_(revived_all[i:i + 500])).values(condemned_ns=None))

    @staticmethod
    def _committed(c: sa.Connection, machine_id: MachineId, session: str) -> RecoveryPoint | None:
        """The recovery point a session committed already, if it did."""
        rp = t.recovery_points.c
        row = c.execute(sa.select(t.recovery_points)
                        .where(rp.session_id == session, rp.machine_id == machine_id)).one_or_none()
        return None if row is None else _recovery_point(row)

    def forget_chunks(self, machine_id: MachineId, ids: Iterable[ChunkId]) -> int:
        """Drop index entries of chunks found damaged, so that the next backup stores them anew."""
        wanted = list(ids)
        removed = 0
        with self.eng.begin() as c:
            lock_machine(c, machine_id)  # not between a commit's check and its insert
            for i in range(0, len(wanted), 500):
                removed += c.execute(sa.delete(t.chunks).where(
                    t.chunks.c.machine_id == machine_id, t.chunks.c.chunk_id.in_(wanted[i:i + 500]))).rowcount
            if removed:
                bump_chunk_epoch(c, machine_id)
        return removed

    # ---- reading --------------------------------------------------------------------------------------

    def recovery_points(self, machine_id: MachineId) -> list[RecoveryPoint]:
        with self.eng.connect() as c:
            rows = c.execute(sa.select(t.recovery_points).where(t.recovery_points.c.machine_id == machine_id)
                             .order_by(t.recovery_points.c.created_ns)).all()
        return [_recovery_point(r) for r in rows]

    # ---- retention ----------------------------------------------------------------------------------------

    def set_retention(self, machine_id: MachineId, rules: Retention) -> None:
        """Store the retention the vault enforces for the machine's points (checked first: PolicyInvalid)."""
        policy.check_retention(rules)
        values = {"rules": msgspec.json.encode(rules).decode(), "updated_ns": self.clock.now_ns()}
        with self.eng.begin() as c:
            lock_machine(c, machine_id)
            if not c.execute(sa.update(t.retention).where(t.retention.c.machine_id == machine_id).values(**values),
                             execution_options={"preserve_rowcount": True}).rowcount:
                c.execute(sa.insert(t.retention).values(machine_id=machine_id, **values))

    def retention(self, machine_id: MachineId) -> Retention | None:
        """The machine's retention rules; None when none were set (the vault then expires nothing)."""
        with self.eng.connect() as c:
            text = c.execute(sa.select(t.retention.c.rules).where(
                t.retention.c.machine_id == machine_id)).scalar_one_or_none()
        return None if text is None else msgspec.json.decode(text, type=Retention)

    # ---- the agents' job history ----------------------------------------------------------------------

    def report_jobs(self, machine_id: MachineId, jobs: list[JobRecord]) -> None:
        """Record jobs the machine ran; a job reported again replaces its row. Another machine's job id is refused."""
        if len(jobs) > MAX_JOBS_PER_REPORT:
            raise_error("InvalidArgument", what=f"at most {MAX_JOBS_PER_REPORT} jobs per report")
        rows = [_job_row(machine_id, j, self.clock.now_ns()) for j in jobs]
        if not rows:
            return
        ids = [r["job_id"] for r in rows]
        with self.eng.begin() as c:
            lock_machine(c, machine_id)
            theirs = c.execute(sa.select(t.jobs.c.job_id).where(
                t.jobs.c.job_id.in_(ids), t.jobs.c.machine_id != machine_id)).first()
            if theirs is not None:
                raise_error("InvalidArgument", what="a job id of another machine")
            c.execute(sa.delete(t.jobs).where(t.jobs.c.job_id.in_(ids)))
            c.execute(sa.insert(t.jobs), rows)

    def jobs(self, machine_id: MachineId, limit: int = 100) -> list[JobRecord]:
        """The machine's newest jobs, oldest first."""
        return [j for _mid, j in self.jobs_with_machines(machine_id, limit)]

    def jobs_with_machines(self, machine_id: MachineId | None = None,
                           limit: int = 100) -> list[tuple[MachineId, JobRecord]]:
        """The newest jobs of one machine or of all, oldest first, each with its machine."""
        j = t.jobs.c
        q = sa.select(t.jobs).order_by(j.started_ns.desc(), j.job_id).limit(max(1, min(limit, 10_000)))
        if machine_id is not None:
            q = q.where(j.machine_id == machine_id)
        with self.eng.connect() as c:
            rows = c.execute(q).all()
        return [(MachineId(r.machine_id), JobRecord(
            job_id=r.job_id, kind=r.kind, trigger=r.trigger, started_ns=r.started_ns, ended_ns=r.ended_ns,
            status=JobStatus(r.status), files=r.files, bytes=r.bytes, warnings=r.warnings,
            recovery_point=r.recovery_point, error_id=r.error_id, error_text=r.error_text)) for r in reversed(rows)]

    def job_machines(self) -> dict[str, str]:
        """Machine id -> host name, for showing whose job a row is."""
        with self.eng.connect() as c:
            return {r.machine_id: r.hostname for r in c.execute(
                sa.select(t.machines.c.machine_id, t.machines.c.hostname))}

    def refs(self, machine_id: MachineId, rp_id: str) -> list[ChunkId]:
        with self.eng.connect() as c:
            rp = t.recovery_points.c
            blob = c.execute(sa.select(t.point_refs.c.refs).join_from(
                t.point_refs, t.recovery_points, rp.rp_id == t.point_refs.c.rp_id).where(
                rp.machine_id == machine_id, rp.rp_id == rp_id)).scalar_one_or_none()
        if blob is None:
            raise_error("RecoveryPointNotFound", rp=rp_id)
        blob = bytes(blob)
        return [ChunkId(blob[i:i + 32]) for i in range(0, len(blob), 32)]

    def locate(self, machine_id: MachineId, ids: Iterable[ChunkId]) -> dict[ChunkId, ChunkLocation]:
        """Locations of the ids the index holds. When they are a large share of the machine's index (a whole
        restore), one pass over the index costs a quarter of the lookups by id."""
        wanted = list(dict.fromkeys(ids))
        out: dict[ChunkId, ChunkLocation] = {}
        c_ = t.chunks.c
        cols = sa.select(c_.chunk_id, c_.pack_id, c_.offset, c_.length, c_.kind)
        with self.eng.connect() as c:
            if len(wanted) >= LOCATE_SCAN_FROM:
                total = c.execute(sa.select(sa.func.count()).select_from(t.chunks)
                                  .where(c_.machine_id == machine_id)).scalar_one()
                if len(wanted) * LOCATE_SCAN_SHARE >= total:
                    want = set(wanted)
                    rows = c.execute(cols.where(c_.machine_id == machine_id)
                                     .execution_options(yield_per=SCAN_BATCH))
                    for part in rows.partitions():
                        for cid, pid, off, length, kind in part:
                            if cid in want:
                                out[cid] = ChunkLocation(pid, off, length, kind)
                    return out
            by_ids = cols.where(c_.machine_id == machine_id, c_.chunk_id.in_(sa.bindparam("ids", expanding=True)))
            for i in range(0, len(wanted), 500):
                for cid, pid, off, length, kind in c.execute(by_ids, {"ids": wanted[i:i + 500]}):
                    out[ChunkId(bytes(cid))] = ChunkLocation(pid, off, length, kind)
        return out

    def index(self, machine_id: MachineId) -> Iterator[tuple[ChunkId, ChunkLocation]]:
        c_ = t.chunks.c
        with self.eng.connect() as c:
            for r in c.execute(sa.select(c_.chunk_id, c_.pack_id, c_.offset, c_.length, c_.kind)
                               .where(c_.machine_id == machine_id)):
                yield ChunkId(bytes(r.chunk_id)), ChunkLocation(PackId(r.pack_id), r.offset, r.length, r.kind)

    def read(self, machine_id: MachineId, pack_id: PackId, offset: int, length: int) -> bytes:
        try:
            return self.blobs.get_range(pack_name(machine_id, pack_id), offset, length)
        except FileNotFoundError:
            raise_error("ChunkMissing", chunk=f"pack {pack_id[:16]}")
        except OSError as exc:
            raise_error("IntegrityError", what=f"pack {pack_id[:16]} range {offset}+{length}: {exc.strerror}")

    def pack_size(self, machine_id: MachineId, pack_id: PackId) -> int | None:
        """Size of a pack the vault holds and indexes, or None: how a retried upload learns it may skip."""
        with self.eng.connect() as c:
            size: int | None = c.execute(sa.select(t.packs.c.size).where(
                t.packs.c.machine_id == machine_id, t.packs.c.pack_id == pack_id,
                t.packs.c.deleted_ns.is_(None))).scalar_one_or_none()
        return size

    def packs(self, machine_id: MachineId) -> list[tuple[PackId, int]]:
        with self.eng.connect() as c:
            return [(PackId(r.pack_id), r.size) for r in c.execute(
                sa.select(t.packs.c.pack_id, t.packs.c.size).where(t.packs.c.machine_id == machine_id,
                                                                   t.packs.c.deleted_ns.is_(None)))]

    def read_pack(self, machine_id: MachineId, pack_id: PackId) -> bytes:
        try:
            return self.blobs.get(pack_name(machine_id, pack_id))
        except FileNotFoundError:
            raise_error("ChunkMissing", chunk=f"pack {pack_id[:16]}")

    # ---- tokens and identity (the vault server's authorization) --------------------------------------

    def authenticate(self, token: str, hostname: str, write: bool = True) -> MachineId:
        """The machine whose data a token opens; 230006 when the caller's host name differs from the one
        registered. A restore grant opens another machine's data for reading only."""
        digest = _digest(token)
        with self.eng.connect() as c:
            row = c.execute(sa.select(t.machines.c.machine_id, t.machines.c.hostname).where(
                t.machines.c.token_digest == digest)).one_or_none()
            grant = None
            if row is None:
                g, m = t.grants.c, t.machines.c
                grant = c.execute(sa.select(g.machine_id, g.expires_ns, m.hostname)
                                  .join(t.machines, m.machine_id == g.grantee)
                                  .where(g.token_digest == digest)).one_or_none()
        if row is None and grant is None:
            raise_error("TokenInvalid")
        registered = row.hostname if row is not None else grant.hostname  # type: ignore[union-attr]
        if hostname != registered:
            raise_error("ServerRenamed", detail=f"registered as {registered!r}, this machine is now {hostname!r}")
        if row is not None:
            return MachineId(row.machine_id)
        assert grant is not None
        if self.clock.now_ns() >= grant.expires_ns:
            raise_error("TokenInvalid", detail="the restore grant has expired")
        if write:
            raise_error("AccessDenied", reason="a restore grant only reads the other machine's data")
        return MachineId(grant.machine_id)

    def new_admin_token(self) -> str:
        """Replace the admin token; the vault keeps its digest only."""
        token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.eng.begin() as c:
            c.execute(sa.update(t.vault).values(admin_token_digest=_digest(token)))
        return token

    def check_admin(self, token: str) -> None:
        with self.eng.connect() as c:
            digest = c.execute(sa.select(t.vault.c.admin_token_digest)).scalar_one_or_none()
        if digest is None or not token.startswith(ADMIN_TOKEN_PREFIX) or \
                not secrets.compare_digest(digest, _digest(token)):
            raise_error("AccessDenied", reason="administration needs the vault's admin token")

    def public_url(self) -> str | None:
        with self.eng.connect() as c:
            url: str | None = c.execute(sa.select(t.vault.c.public_url)).scalar_one_or_none()
        return url

    def set_public_url(self, url: str | None, tls_fingerprint: str | None) -> None:
        if url is not None and not url.startswith("https://"):
            raise_error("InvalidArgument", what="the vault's URL must start with https://")
        with self.eng.begin() as c:
            c.execute(sa.update(t.vault).values(public_url=url))
        self.tls_fingerprint = tls_fingerprint
