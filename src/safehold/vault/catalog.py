"""The vault catalog on SQLAlchemy Core: vault settings, credentials, machines, packs, chunk index,
backup sessions and recovery points. SQLite for the embedded vault; the same tables run on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

metadata = sa.MetaData()

vault = sa.Table(
    "vault", metadata,
    sa.Column("vault_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("max_machines", sa.Integer, nullable=False),
    sa.Column("format_version", sa.Integer, nullable=False),
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
)

packs = sa.Table(
    "packs", metadata,
    sa.Column("machine_id", sa.String(64), primary_key=True),
    sa.Column("pack_id", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
)

chunks = sa.Table(
    "chunks", metadata,
    sa.Column("machine_id", sa.String(64), primary_key=True),
    sa.Column("chunk_id", sa.LargeBinary(32), primary_key=True),
    sa.Column("pack_id", sa.String(64), nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("length", sa.Integer, nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("machine_id", sa.String(64), nullable=False),
    sa.Column("started_ns", sa.BigInteger, nullable=False),
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
    sa.Column("refs", sa.LargeBinary, nullable=False),  # concatenated 32-byte chunk ids, sorted
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def engine(url: str) -> sa.Engine:
    eng = sa.create_engine(url)
    if eng.dialect.name == "sqlite":
        event.listen(eng, "connect", _sqlite_pragmas)
    return eng


def create(eng: sa.Engine) -> None:
    metadata.create_all(eng)
