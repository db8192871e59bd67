"""The vault catalog on SQLAlchemy Core: vault settings, credentials, machines, packs, chunk index,
backup sessions and recovery points. SQLite for the embedded vault; the same tables run on PostgreSQL.

The Table definitions below are the schema; the Alembic revisions in `migrations/versions` build it, and a
test checks that `upgrade` on an empty database yields exactly these tables. A schema change is a change
here plus a new revision. Alembic is configured in code (no alembic.ini) and imported only when migrating,
so opening a vault costs one small query (`check_current`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event

from safehold.errors import raise_error

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision in migrations/versions; tests/test_catalog.py checks it against Alembic's own view.
HEAD = "0007"
VERSION_TABLE = "alembic_version"

# Names for constraints, so that later revisions (batch mode on SQLite) can refer to them.
metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

vault = sa.Table(
    "vault", metadata,
    sa.Column("vault_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("max_machines", sa.Integer, nullable=False),
    sa.Column("format_version", sa.Integer, nullable=False),
    sa.Column("public_url", sa.String(2048)),  # the address agents use for a vault server
    sa.Column("admin_token_digest", sa.String(64)),
)

credentials = sa.Table(
    "credentials", metadata,
    sa.Column("credential_id", sa.String(64), primary_key=True),
    sa.Column("secret_digest", sa.String(64), nullable=False),
    sa.Column("issued_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_ns", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # active | superseded | used
    sa.Column("used_by", sa.String(64)),
)

machines = sa.Table(
    "machines", metadata,
    sa.Column("machine_id", sa.String(64), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("os_machine_id", sa.String(64), nullable=False),
    sa.Column("agent_version", sa.String(32), nullable=False),
    sa.Column("registered_ns", sa.BigInteger, nullable=False),
    sa.Column("token_digest", sa.String(64), nullable=False),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("key_verifier", sa.String(64)),
    # removals from the machine's chunk index so far: raised by every transaction that condemns, sweeps or
    # forgets a chunk of it (revision 0006, docs/retention.md "Chunk epoch")
    sa.Column("chunk_epoch", sa.BigInteger, nullable=False, server_default="0"),
)

packs = sa.Table(
    "packs", metadata,
    sa.Column("machine_id", sa.String(64), primary_key=True),
    sa.Column("pack_id", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    # set when housekeeping dropped the pack (repacked or all garbage); its blob goes after a grace period
    sa.Column("deleted_ns", sa.BigInteger),
)

chunks = sa.Table(
    "chunks", metadata,
    sa.Column("machine_id", sa.String(64), primary_key=True),
    sa.Column("chunk_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("pack_id", sa.String(64), nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("length", sa.Integer, nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    # set when housekeeping found no recovery point referencing the chunk: left out of known_chunks from then
    # on, deleted once no backup session that started before this moment is open (docs/retention.md)
    sa.Column("condemned_ns", sa.BigInteger),
    sqlite_with_rowid=False,  # rows in the primary-key b-tree, not a rowid table plus an index (revision 0005)
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("machine_id", sa.String(64), nullable=False),
    sa.Column("started_ns", sa.BigInteger, nullable=False),
)

grants = sa.Table(
    # Read-only access to one machine's data for another machine that restores it (alternate-machine
    # restore): given for a credentials file plus proof of the source machine's key, for a limited time.
    "grants", metadata,
    sa.Column("token_digest", sa.String(64), primary_key=True),
    sa.Column("machine_id", sa.String(64), nullable=False),  # whose data may be read
    sa.Column("grantee", sa.String(64), nullable=False),  # the machine that restores it
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("expires_ns", sa.BigInteger, nullable=False),
)

recovery_points = sa.Table(
    "recovery_points", metadata,
    sa.Column("rp_id", sa.String(64), primary_key=True),
    sa.Column("machine_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("root", sa.LargeBinary(32), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("stats", sa.JSON, nullable=False),
    sa.Column("sealed_meta", sa.LargeBinary, nullable=False),
    # the backup session that committed it: a repeated commit of one session finds its point here
    sa.Column("session_id", sa.String(64), unique=True, index=True),
    sa.Column("keep_until_ns", sa.BigInteger),  # an on-demand point kept at least until then
    sa.Column("chunk_epoch", sa.BigInteger),  # the machine's chunk_epoch when the point was committed
)

point_refs = sa.Table(
    # A point's references, out of its row (revision 0007): listing points never reads them.
    "point_refs", metadata,
    sa.Column("rp_id", sa.String(64), primary_key=True),
    sa.Column("refs", sa.LargeBinary, nullable=False),  # concatenated 32-byte chunk ids, sorted
)

retention = sa.Table(
    # The retention rules the vault enforces for a machine: formats.policy.Retention as JSON.
    "retention", metadata,
    sa.Column("machine_id", sa.String(64), primary_key=True),
    sa.Column("rules", sa.Text, nullable=False),
    sa.Column("updated_ns", sa.BigInteger, nullable=False),
)

housekeeping = sa.Table(
    # One row per housekeeping run (a vault-side job): when, how it ended and its figures as JSON.
    "housekeeping", metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("started_ns", sa.BigInteger, nullable=False),
    sa.Column("ended_ns", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("figures", sa.JSON, nullable=False),
)


jobs = sa.Table(
    # The agents' jobs as each reports them after it ends (model.JobRecord); the agent's own history is the
    # source, so a report repeated after a lost answer replaces the row.
    "jobs", metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("machine_id", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("started_ns", sa.BigInteger, nullable=False),
    sa.Column("ended_ns", sa.BigInteger),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("files", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("warnings", sa.BigInteger, nullable=False),
    sa.Column("recovery_point", sa.String(64)),
    sa.Column("error_id", sa.String(16)),
    sa.Column("error_text", sa.String(2000)),
    sa.Column("reported_ns", sa.BigInteger, nullable=False),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def engine(url: str) -> sa.Engine:
    """An engine on a catalog URL: sqlite:///FILE or postgresql+psycopg://USER@HOST[:PORT]/DATABASE."""
    if url.startswith("sqlite"):
        eng = sa.create_engine(url)
        event.listen(eng, "connect", _sqlite_pragmas)
        return eng
    # a PostgreSQL server restarted under a long-running vault server: pooled connections are checked first
    return sa.create_engine(url, pool_pre_ping=True)


def insert_ignore(table: sa.Table, dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING: rows whose key exists already are skipped, not an error, so that
    two vault servers taking the same upload at once both succeed."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # noqa: PLC0415
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite  # noqa: PLC0415
        return sqlite.insert(table).on_conflict_do_nothing()
    raise ValueError(f"the catalog does not run on {dialect}")


# Index rows go in through the driver directly: a pack brings thousands of rows, and the Core statement's
# per-row parameter processing costs more than the insert itself. A row already there is kept, unless it is
# condemned: then the new copy takes its place (and is live again), in the same statement.
_UPSERT_CHUNKS = (
    'INSERT INTO chunks (machine_id, chunk_id, pack_id, "offset", length, kind) VALUES ({marks}) '
    'ON CONFLICT (machine_id, chunk_id) DO UPDATE SET pack_id = excluded.pack_id, "offset" = excluded."offset", '
    "length = excluded.length, kind = excluded.kind, condemned_ns = NULL WHERE chunks.condemned_ns IS NOT NULL")
_INSERT_CHUNKS = {"sqlite": _UPSERT_CHUNKS.format(marks=", ".join(["?"] * 6)),
                  "postgresql": _UPSERT_CHUNKS.format(marks=", ".join(["%s"] * 6))}


def insert_chunk_rows(conn: sa.Connection, rows: Sequence[tuple[str, bytes, str, int, int, int]]) -> None:
    """Insert index rows (machine id, chunk id, pack id, offset, length, kind): ids already there are kept,
    condemned ones are replaced by the new row."""
    sql = _INSERT_CHUNKS.get(conn.dialect.name)
    if sql is None:
        raise ValueError(f"the catalog does not run on {conn.dialect.name}")
    conn.exec_driver_sql(sql, list(rows))


def lock(conn: sa.Connection) -> None:
    """Serialize catalog-wide changes (migrations, the first vault row) until this transaction ends.

    PostgreSQL: an advisory lock, as vault servers share the database. SQLite: nothing; its one writer at a
    time, and one vault per file, are enough."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(7_002_060_001)))


# ---- schema versions ------------------------------------------------------------------------------------


def _alembic_config(conn: sa.Connection) -> Config:
    from alembic.config import Config  # noqa: PLC0415  (about 0.2 s to import: only when migrating)

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def revision(conn: sa.Connection) -> str | None:
    """The catalog's schema revision; None for an empty database or a catalog made before migrations."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    version = sa.table(VERSION_TABLE, sa.column("version_num", sa.String))
    heads: Sequence[str] = conn.execute(sa.select(version.c.version_num)).scalars().all()
    return ",".join(sorted(heads)) or None


def is_empty(conn: sa.Connection) -> bool:
    """True when the database holds none of the catalog's tables (and no version table)."""
    names = set(sa.inspect(conn).get_table_names())
    return not names & ({*metadata.tables, VERSION_TABLE})


def upgrade(eng: sa.Engine) -> tuple[str | None, str]:
    """Bring the catalog to the newest revision; returns (revision before, revision after).

    An empty database gets every table; a catalog made before migrations existed (its tables, no version
    table) is completed by the first revision. Safe to run again: at head it changes nothing.
    """
    from alembic import command  # noqa: PLC0415

    with eng.begin() as conn:
        lock(conn)  # two `vault migrate` at once: the second waits, then finds head
        before = revision(conn)
        if before != HEAD:
            command.upgrade(_alembic_config(conn), "head")
        after = revision(conn)
    assert after is not None
    return before, after


def create(eng: sa.Engine) -> None:
    """Make the catalog's tables in an empty database."""
    upgrade(eng)


def check_current(eng: sa.Engine) -> None:
    """Refuse a catalog whose schema is older (CatalogOutdated) or newer (CatalogCorrupt) than this program's.

    Reads only: vault servers sharing one database open it concurrently; `safehold vault migrate` upgrades."""
    with eng.connect() as conn:
        rev = revision(conn)
        empty = rev is None and is_empty(conn)
    if rev == HEAD:
        return
    if empty:
        raise_error("CatalogCorrupt", reason="the database holds no vault catalog")
    if rev is None or _known(rev):
        raise_error("CatalogOutdated", revision=rev or "none (made before schema versions)", head=HEAD)
    raise_error("CatalogCorrupt", reason=f"its schema revision {rev} is newer than this safehold knows ({HEAD}); "
                                         "upgrade safehold")


def _known(rev: str) -> bool:
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    script = ScriptDirectory(str(MIGRATIONS))
    try:
        return all(script.get_revision(r) is not None for r in rev.split(","))
    except Exception:  # alembic raises its own errors for unknown or ambiguous ids
        return False
