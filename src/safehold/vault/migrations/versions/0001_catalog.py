"""The vault catalog: vault settings, credentials, machines, packs, chunk index, sessions, recovery points.

Revision ID: 0001
Revises:
Create Date: 2026-05-01

On an empty database it creates every table. A catalog made before schema versions existed (the same tables,
fewer columns, no version table) is completed instead: the columns added since then, and the index on
recovery_points.session_id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# (table, column) added after the first, unversioned catalogs; all nullable, so ADD COLUMN works everywhere.
_ADDED = (
    ("vault", sa.Column("public_url", sa.String(2048), nullable=True)),
    ("vault", sa.Column("admin_token_digest", sa.String(64), nullable=True)),
    ("machines", sa.Column("key_verifier", sa.String(64), nullable=True)),
    ("recovery_points", sa.Column("session_id", sa.String(64), nullable=True)),
)


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("vault"):
        _complete_unversioned()
    else:
        _create()


def _complete_unversioned() -> None:
    """Add what is missing, and only that: the same steps serve a catalog whose version table was lost."""
    inspector = sa.inspect(op.get_bind())
    for table, column in _ADDED:
        if column.name not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, column)
    if "ix_recovery_points_session_id" not in {i["name"] for i in inspector.get_indexes("recovery_points")}:
        op.create_index("ix_recovery_points_session_id", "recovery_points", ["session_id"], unique=True)


def _create() -> None:
    op.create_table(
        "vault",
        sa.Column("vault_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("max_machines", sa.Integer, nullable=False),
        sa.Column("format_version", sa.Integer, nullable=False),
        sa.Column("public_url", sa.String(2048), nullable=True),
        sa.Column("admin_token_digest", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("vault_id", name="pk_vault"),
    )
    op.create_table(
        "credentials",
        sa.Column("credential_id", sa.String(64), nullable=False),
        sa.Column("secret_digest", sa.String(64), nullable=False),
        sa.Column("issued_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_ns", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("used_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("credential_id", name="pk_credentials"),
    )
    op.create_table(
        "machines",
        sa.Column("machine_id", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("os_machine_id", sa.String(64), nullable=False),
        sa.Column("agent_version", sa.String(32), nullable=False),
        sa.Column("registered_ns", sa.BigInteger, nullable=False),
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("key_verifier", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("machine_id", name="pk_machines"),
    )
    op.create_table(
        "packs",
        sa.Column("machine_id", sa.String(64), nullable=False),
        sa.Column("pack_id", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("machine_id", "pack_id", name="pk_packs"),
    )
    op.create_table(
        "chunks",
        sa.Column("machine_id", sa.String(64), nullable=False),
        sa.Column("chunk_id", sa.LargeBinary(32), nullable=False),
        sa.Column("pack_id", sa.String(64), nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("length", sa.Integer, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.PrimaryKeyConstraint("machine_id", "chunk_id", name="pk_chunks"),
    )
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("machine_id", sa.String(64), nullable=False),
        sa.Column("started_ns", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_sessions"),
    )
    op.create_table(
        "recovery_points",
        sa.Column("rp_id", sa.String(64), nullable=False),
        sa.Column("machine_id", sa.String(64), nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
        sa.Column("sealed_meta", sa.LargeBinary, nullable=False),
        sa.Column("refs", sa.LargeBinary, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("rp_id", name="pk_recovery_points"),
    )
    op.create_index("ix_recovery_points_machine_id", "recovery_points", ["machine_id"])
    op.create_index("ix_recovery_points_session_id", "recovery_points", ["session_id"], unique=True)


def downgrade() -> None:
    for table in ("recovery_points", "sessions", "chunks", "packs", "machines", "credentials", "vault"):
        op.drop_table(table)
