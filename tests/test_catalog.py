"""The vault catalog on SQLite and PostgreSQL: migrations match the schema, old catalogs are upgraded,
outdated ones refused, and concurrent vault servers sharing one PostgreSQL catalog stay consistent."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from safehold.errors import ALL, SafeholdError
from safehold.model import BackupStats, ChunkId, JobStatus, MachineId, PackedIds, PackEntry
from safehold.vault import catalog as t
from safehold.vault.service import VaultService

from conftest import Cli

# What `vault init` made before schema versions (the catalog of safehold before the first revision).
UNVERSIONED_SQLITE = """
CREATE TABLE vault (vault_id VARCHAR(64) NOT NULL, name VARCHAR(200) NOT NULL, created_ns BIGINT NOT NULL,
    max_machines INTEGER NOT NULL, format_version INTEGER NOT NULL, PRIMARY KEY (vault_id));
CREATE TABLE credentials (credential_id VARCHAR(64) NOT NULL, secret_digest VARCHAR(64) NOT NULL,
    issued_ns BIGINT NOT NULL, expires_ns BIGINT NOT NULL, state VARCHAR(16) NOT NULL, used_by VARCHAR(64),
    PRIMARY KEY (credential_id));
CREATE TABLE machines (machine_id VARCHAR(64) NOT NULL, hostname VARCHAR(255) NOT NULL,
    os_machine_id VARCHAR(64) NOT NULL, agent_version VARCHAR(32) NOT NULL, registered_ns BIGINT NOT NULL,
    token_digest VARCHAR(64) NOT NULL, wrapped_key BLOB NOT NULL, PRIMARY KEY (machine_id));
CREATE TABLE packs (machine_id VARCHAR(64) NOT NULL, pack_id VARCHAR(64) NOT NULL, size BIGINT NOT NULL,
    created_ns BIGINT NOT NULL, PRIMARY KEY (machine_id, pack_id));
CREATE TABLE chunks (machine_id VARCHAR(64) NOT NULL, chunk_id BLOB NOT NULL, pack_id VARCHAR(64) NOT NULL,
    "offset" BIGINT NOT NULL, length INTEGER NOT NULL, kind SMALLINT NOT NULL, PRIMARY KEY (machine_id, chunk_id));
CREATE TABLE sessions (session_id VARCHAR(64) NOT NULL, machine_id VARCHAR(64) NOT NULL,
    started_ns BIGINT NOT NULL, PRIMARY KEY (session_id));
CREATE TABLE recovery_points (rp_id VARCHAR(64) NOT NULL, machine_id VARCHAR(64) NOT NULL,
    created_ns BIGINT NOT NULL, root BLOB NOT NULL, status VARCHAR(32) NOT NULL, stats JSON NOT NULL,
    sealed_meta BLOB NOT NULL, refs BLOB NOT NULL, PRIMARY KEY (rp_id));
CREATE INDEX ix_recovery_points_machine_id ON recovery_points (machine_id);
"""

MACHINE = MachineId("m" * 32)


@pytest.fixture
def engine_for(tmp_path: Path) -> Iterator[Callable[[str | None], sa.Engine]]:
    """An engine on the catalog under test (None: a new SQLite file), disposed after the test."""
    made: list[sa.Engine] = []

    def make(url: str | None) -> sa.Engine:
        eng = t.engine(url or f"sqlite:///{tmp_path / f'catalog{len(made)}.sqlite'}")
        made.append(eng)
        return eng

    yield make
    for eng in made:
        eng.dispose()


@pytest.fixture
def vaults() -> Iterator[list[VaultService]]:
    """Services to close after the test."""
    opened: list[VaultService] = []
    yield opened
    for svc in opened:
        svc.close()


def _diff(eng: sa.Engine) -> list[Any]:
    with eng.connect() as c:
        return list(compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), t.metadata))


def _columns(eng: sa.Engine) -> dict[str, set[str]]:
    insp = sa.inspect(eng)
    return {name: {c["name"] for c in insp.get_columns(name)} for name in insp.get_table_names()}


def _code(exc: pytest.ExceptionInfo[SafeholdError]) -> str:
    return exc.value.spec.code


def _pack(seed: int, chunk_ids: list[bytes]) -> tuple[str, bytes, list[PackEntry]]:
    """A pack as the vault sees it: header, opaque chunk bytes; the vault checks only the id and the bounds."""
    from safehold.formats.pack import HEADER, pack_id

    data = bytearray(HEADER)
    entries = []
    for i, cid in enumerate(chunk_ids):
        blob = bytes([seed % 256, i % 256]) * 50
        entries.append(PackEntry(ChunkId(cid), 0, len(data), len(blob)))
        data += blob
    return pack_id(bytes(data)), bytes(data), entries


def _count(svc: VaultService, table: sa.Table) -> int:
    with svc.eng.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# ---- migrations against the schema ----------------------------------------------------------------------


def test_head_is_the_newest_revision() -> None:
    assert ScriptDirectory(str(t.MIGRATIONS)).get_current_head() == t.HEAD


def test_upgrade_on_empty_database_gives_the_schema(catalog_url: str | None,
                                                    engine_for: Callable[[str | None], sa.Engine]) -> None:
    eng = engine_for(catalog_url)
    with eng.connect() as c:
        assert t.is_empty(c) and t.revision(c) is None
    assert t.upgrade(eng) == (None, t.HEAD)
    assert _diff(eng) == []
    expected = {name: {c.name for c in table.columns} for name, table in t.metadata.tables.items()}
    assert _columns(eng) == {**expected, t.VERSION_TABLE: {"version_num"}}
    assert t.upgrade(eng) == (t.HEAD, t.HEAD)  # again: nothing to do
    t.check_current(eng)
    unique = {i["name"]: i["unique"] for i in sa.inspect(eng).get_indexes("recovery_points")}
    assert unique["ix_recovery_points_session_id"]


def test_unversioned_sqlite_vault_is_refused_then_migrated(tmp_path: Path, cli: Cli,
                                                          vaults: list[VaultService]) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    db = sqlite3.connect(folder / "catalog.sqlite")
    db.executescript(UNVERSIONED_SQLITE)
    db.execute("INSERT INTO vault VALUES ('v1', 'old', 1, 50, 1)")
    db.execute("INSERT INTO recovery_points VALUES ('rp1', ?, 5, ?, 'Completed', '{}', x'00', ?)",
               (MACHINE, b"r" * 32, b"r" * 32))
    db.commit()
    db.close()
    doc = {"format": "safehold-vault", "version": 1, "vault_id": "v1", "catalog": "catalog.sqlite", "blobs": "blobs"}
    (folder / "vault.json").write_text(json.dumps(doc))

    with pytest.raises(SafeholdError) as exc:
        VaultService.open_folder(folder)
    assert _code(exc) == "CatalogOutdated" and "safehold vault migrate" in " ".join(exc.value.spec.actions)
    r = cli("vault", "settings", folder)
    assert r.code == 1 and "700206" in r.err and "vault migrate" in r.err and "Traceback" not in r.err

    r = cli.ok("vault", "migrate", folder, "--json")
    assert json.loads(r.out) == {"vault": str(folder), "from_revision": None, "to_revision": t.HEAD,
                                 "changed": True}
    assert "already at revision" in cli.ok("vault", "migrate", folder).out

    svc = VaultService.open_folder(folder)
    vaults.append(svc)
    assert svc.name == "old"
    [rp] = svc.recovery_points(MACHINE)
    assert rp.rp_id == "rp1" and rp.status == JobStatus.COMPLETED
    assert _diff(svc.eng) == []


def test_chunk_index_of_a_0004_catalog_is_rebuilt_without_rowid(engine_for: Callable[[str | None], sa.Engine]) -> None:
    """Revision 0005 rebuilds SQLite's chunk index as a WITHOUT ROWID table and keeps every row."""
    from alembic import command

    eng = engine_for(None)
    with eng.begin() as c:
        command.upgrade(t._alembic_config(c), "0004")
    rows = [(MACHINE, bytes([i]) * 32, "p" * 64, i * 100, 100, 1, None if i % 2 else 7) for i in range(50)]
    with eng.begin() as c:
        c.execute(t.chunks.insert(), [dict(zip(("machine_id", "chunk_id", "pack_id", "offset", "length", "kind",
                                                "condemned_ns"), r, strict=True)) for r in rows])
        assert "WITHOUT ROWID" not in c.execute(sa.text(
            "SELECT sql FROM sqlite_master WHERE name = 'chunks'")).scalar_one()
    assert t.upgrade(eng) == ("0004", t.HEAD)
    with eng.connect() as c:
        sql = c.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'chunks'")).scalar_one()
        got = [tuple(r) for r in c.execute(sa.select(t.chunks).order_by(t.chunks.c.chunk_id))]
        indexes = c.execute(sa.text("SELECT count(*) FROM sqlite_master WHERE tbl_name = 'chunks' "
                                    "AND type = 'index'")).scalar_one()
    assert "WITHOUT ROWID" in sql and indexes == 0  # no second b-tree repeating the key
    assert got == rows
    assert _diff(eng) == []
    t.check_current(eng)


def test_a_0005_catalog_gets_chunk_epochs_and_keeps_its_rows(engine_for: Callable[[str | None], sa.Engine]) -> None:
    """Revision 0006: machines start at chunk epoch 0; points committed before it carry none, so no commit
    takes their references on trust. Revision 0007 moves each point's references into `point_refs`."""
    from alembic import command

    eng = engine_for(None)
    with eng.begin() as c:
        command.upgrade(t._alembic_config(c), "0005")
        c.execute(sa.text("INSERT INTO machines (machine_id, hostname, os_machine_id, agent_version, registered_ns, "
                          "token_digest, wrapped_key) VALUES (:m, 'h', 'o', '0.1.0', 1, 'd', x'00')"), {"m": MACHINE})
        c.execute(sa.text("INSERT INTO recovery_points (rp_id, machine_id, created_ns, root, status, stats, "
                          "sealed_meta, refs) VALUES ('rp1', :m, 5, :r, 'Completed', '{}', x'00', :r)"),
                  {"m": MACHINE, "r": b"r" * 32})
    assert t.upgrade(eng) == ("0005", t.HEAD)
    with eng.connect() as c:
        assert c.execute(sa.select(t.machines.c.machine_id, t.machines.c.chunk_epoch)).all() == [(MACHINE, 0)]
        assert c.execute(sa.select(t.recovery_points.c.rp_id, t.recovery_points.c.chunk_epoch)).all() == [
            ("rp1", None)]
        assert [(r, bytes(b)) for r, b in c.execute(sa.select(t.point_refs))] == [("rp1", b"r" * 32)]
        assert "refs" not in {col["name"] for col in sa.inspect(c).get_columns("recovery_points")}
    assert _diff(eng) == []
    t.check_current(eng)


def test_outdated_and_newer_catalogs_are_refused(tmp_path: Path, catalog_url: str | None,
                                                 vaults: list[VaultService]) -> None:
    svc = VaultService.init_folder(tmp_path / "vault", catalog_url=catalog_url)
    vaults.append(svc)
    with svc.eng.begin() as c:  # as if made before schema versions
        c.execute(sa.text(f"DROP TABLE {t.VERSION_TABLE}"))
    with pytest.raises(SafeholdError) as exc:
        VaultService.open_folder(tmp_path / "vault")
    assert _code(exc) == "CatalogOutdated" and exc.value.spec.http_status == 503
    assert exc.value.spec.id == 700206
    assert VaultService.migrate_folder(tmp_path / "vault") == (None, t.HEAD)
    vaults.append(VaultService.open_folder(tmp_path / "vault"))
    assert _diff(svc.eng) == []

    with svc.eng.begin() as c:
        c.execute(sa.text(f"UPDATE {t.VERSION_TABLE} SET version_num = 'ffff0000'"))
    with pytest.raises(SafeholdError) as exc:
        VaultService.open_folder(tmp_path / "vault")
    assert _code(exc) == "CatalogCorrupt" and "newer" in exc.value.text


def test_catalog_outdated_entry() -> None:
    entry = next(e for e in ALL if e.code == "CatalogOutdated")
    assert entry.id == 700206 and entry.http_status == 503
    assert any("safehold vault migrate VAULT" in a for a in entry.actions)


# ---- vault folders with a PostgreSQL catalog --------------------------------------------------------------


def test_postgresql_vault_folder(tmp_path: Path, pg_url: str, cli: Cli, vaults: list[VaultService]) -> None:
    r = cli.ok("vault", "init", tmp_path / "vault", "--catalog", pg_url, "--credentials-out",
               tmp_path / "v.vaultcredentials")
    doc = json.loads((tmp_path / "vault" / "vault.json").read_text())
    assert doc["catalog_url"] == pg_url and "catalog" not in doc
    assert (tmp_path / "vault" / "vault.json").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "vault" / "catalog.sqlite").exists()
    # two servers open the same folder at once; opening writes nothing
    one, two = VaultService.open_folder(tmp_path / "vault"), VaultService.open_folder(tmp_path / "vault")
    vaults += [one, two]
    assert one.vault_id == two.vault_id == doc["vault_id"]
    assert json.loads(cli.ok("vault", "migrate", tmp_path / "vault", "--json").out)["changed"] is False
    # one database per vault
    with pytest.raises(SafeholdError) as exc:
        VaultService.init_folder(tmp_path / "other", catalog_url=pg_url)
    assert _code(exc) == "VaultExists" and not (tmp_path / "other").exists()
    r = cli("vault", "init", tmp_path / "other", "--catalog", pg_url)
    assert r.code == 2 and "700202" in r.err
    # the database cannot be reached: an error naming it, the password masked
    doc["catalog_url"] = sa.engine.make_url(pg_url).set(password="s3cret", port=1).render_as_string(False)
    (tmp_path / "vault" / "vault.json").write_text(json.dumps(doc))
    with pytest.raises(SafeholdError) as exc:
        VaultService.open_folder(tmp_path / "vault")
    assert _code(exc) == "CatalogUnavailable" and "127.0.0.1:1" in exc.value.text and "s3cret" not in exc.value.text


def test_catalog_url_is_checked(tmp_path: Path, pg_url: str) -> None:
    for bad in ("mysql://u@h/db", "not a url", "postgresql+psycopg://u@127.0.0.1/"):
        with pytest.raises(SafeholdError) as exc:
            VaultService.init_folder(tmp_path / "v", catalog_url=bad)
        assert _code(exc) == "InvalidArgument" and "--catalog" in exc.value.text
    # nobody listens there: refused before the folder is made, the password not shown
    dead = sa.engine.make_url(pg_url).set(password="s3cret", port=1)
    with pytest.raises(SafeholdError) as exc:
        VaultService.init_folder(tmp_path / "v", catalog_url=dead.render_as_string(hide_password=False))
    assert _code(exc) == "InvalidArgument" and "s3cret" not in exc.value.text and "***" in exc.value.text
    assert not (tmp_path / "v").exists()
    # plain postgresql:// gets the psycopg driver
    svc = VaultService.init_folder(tmp_path / "w", catalog_url=pg_url.replace("+psycopg", ""))
    svc.close()
    assert json.loads((tmp_path / "w" / "vault.json").read_text())["catalog_url"] == pg_url


def test_sqlite_vault_json_is_private(tmp_path: Path, vaults: list[VaultService]) -> None:
    vaults.append(VaultService.init_folder(tmp_path / "vault"))
    doc = json.loads((tmp_path / "vault" / "vault.json").read_text())
    assert doc["catalog"] == "catalog.sqlite" and "catalog_url" not in doc
    for name in ("vault.json", "catalog.sqlite"):
        assert (tmp_path / "vault" / name).stat().st_mode & 0o077 == 0


# ---- two vault servers on one catalog ----------------------------------------------------------------------


def _twice_at_once(fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0) and fn(1) in two threads released together; re-raise what either raised."""
    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return results


def test_concurrent_identical_uploads(tmp_path: Path, catalog_url: str | None, vaults: list[VaultService]) -> None:
    vaults.append(VaultService.init_folder(tmp_path / "vault", catalog_url=catalog_url))
    servers = [VaultService.open_folder(tmp_path / "vault") for _ in range(2)]
    vaults += servers
    sessions = [s.begin_session(MACHINE) for s in servers]
    ids = [os.urandom(32) for _ in range(40)]
    packs = [_pack(n, ids[n * 4:n * 4 + 8]) for n in range(9)]  # neighbours share 4 chunks
    for pid, data, entries in packs:
        _twice_at_once(lambda i, pid=pid, data=data, entries=entries: servers[i].put_pack(
            MACHINE, sessions[i], pid, data, entries))
    svc = servers[0]
    assert sorted(p for p, _ in svc.packs(MACHINE)) == sorted(p for p, _, _ in packs)
    assert _count(svc, t.packs) == len(packs) and _count(svc, t.chunks) == len(ids)
    where = svc.locate(MACHINE, [ChunkId(c) for c in ids])
    assert len(where) == len(ids)
    # a chunk stays in the pack that brought it first
    assert where[ChunkId(ids[5])].pack_id == packs[0][0]


def test_commit_is_once_per_session(tmp_path: Path, catalog_url: str | None, vaults: list[VaultService]) -> None:
    vaults.append(VaultService.init_folder(tmp_path / "vault", catalog_url=catalog_url))
    servers = [VaultService.open_folder(tmp_path / "vault") for _ in range(2)]
    vaults += servers
    svc = servers[0]
    ids = [os.urandom(32) for _ in range(4)]
    pid, data, entries = _pack(1, ids)
    root = ChunkId(ids[0])

    def commit(server: VaultService, session: str, refs: list[bytes], stats: BackupStats | None = None) -> Any:
        return server.commit(MACHINE, session, root, JobStatus.COMPLETED, stats or BackupStats(files=1),
                             [ChunkId(c) for c in refs], b"meta")

    session = svc.begin_session(MACHINE)
    svc.put_pack(MACHINE, session, pid, data, entries)
    first = commit(svc, session, ids)
    again = commit(servers[1], session, ids[:2], BackupStats(files=99))  # a retry: the first point comes back
    assert again == first and again.stats.files == 1
    assert [rp.rp_id for rp in svc.recovery_points(MACHINE)] == [first.rp_id]
    assert _count(svc, t.sessions) == 0
    assert sorted(svc.refs(MACHINE, first.rp_id)) == sorted(ChunkId(c) for c in ids)

    # the same commit taken by two servers at once: one point, both answers name it, the session is gone
    session = svc.begin_session(MACHINE)
    a, b = _twice_at_once(lambda i: commit(servers[i], session, ids))
    assert a == b
    assert len(svc.recovery_points(MACHINE)) == 2 and _count(svc, t.sessions) == 0

    # another machine does not get the point of a session it did not commit
    other = MachineId("x" * 32)
    svc.put_pack(other, session, pid, data, entries)
    with pytest.raises(SafeholdError) as exc:
        servers[1].commit(other, session, root, JobStatus.COMPLETED, BackupStats(), [], b"")
    assert _code(exc) == "InvalidArgument" and "another machine" in exc.value.text
    assert svc.recovery_points(other) == []


def test_commit_check_in_one_pass_merges_with_the_index(tmp_path: Path, catalog_url: str | None,
                                                         vaults: list[VaultService],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-pass check of many referenced chunks walks the index in key order beside the sorted ids: it finds
    an id missing before, between or after the indexed ones, and revives condemned chunks that are referenced."""
    from safehold.vault import service as vault_service

    monkeypatch.setattr(vault_service, "SCAN_FROM", 1)
    svc = VaultService.init_folder(tmp_path / "vault", catalog_url=catalog_url)
    vaults.append(svc)
    other = MachineId("o" * 32)  # another machine's chunks sort between this one's and must not count
    present = [bytes([i]) * 32 for i in range(10, 250, 10)]
    with svc.eng.begin() as c:
        c.execute(t.chunks.insert(), [
            {"machine_id": m, "chunk_id": cid, "pack_id": "p" * 64, "offset": 0, "length": 1, "kind": 1,
             "condemned_ns": 5 if cid[0] % 20 == 0 else None}
            for m, ids in ((MACHINE, present), (other, [bytes([15]) * 32, bytes([255]) * 32])) for cid in ids])
    wanted = [ChunkId(x) for x in present[::2]]
    with svc.eng.begin() as c:  # as a commit passes them: packed, sorted
        VaultService._check_present(c, MACHINE, PackedIds(wanted))
    with svc.eng.connect() as c:
        condemned = {bytes(r.chunk_id) for r in c.execute(sa.select(t.chunks.c.chunk_id).where(
            t.chunks.c.machine_id == MACHINE, t.chunks.c.condemned_ns.is_not(None)))}
    assert condemned == {x for x in present if x[0] % 20 == 0} - set(wanted)
    for absent in (bytes([1]) * 32, bytes([15]) * 32, bytes([255]) * 32):  # before, between (the other
        ids = sorted([*wanted, ChunkId(absent)])                          # machine's), after
        with pytest.raises(SafeholdError) as exc, svc.eng.begin() as c:
            VaultService._check_present(c, MACHINE, ids)
        assert _code(exc) == "ChunkMissing" and absent.hex()[:16] in exc.value.text
