"""Retention and housekeeping: rules per machine, keep-until of on-demand points, condemned chunks, dropped
packs, and the record of housekeeping runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# All nullable, so ADD COLUMN works on SQLite and PostgreSQL alike without rewriting the tables.
_ADDED = (
    ("recovery_points", sa.Column("keep_until_ns", sa.BigInteger, nullable=True)),
    ("chunks", sa.Column("condemned_ns", sa.BigInteger, nullable=True)),
    ("packs", sa.Column("deleted_ns", sa.BigInteger, nullable=True)),
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, column in _ADDED:
        if column.name not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, column)
    if not inspector.has_table("retention"):
        op.create_table(
            "retention",
            sa.Column("machine_id", sa.String(64), nullable=False),
            sa.Column("rules", sa.Text, nullable=False),
            sa.Column("updated_ns", sa.BigInteger, nullable=False),
            sa.PrimaryKeyConstraint("machine_id", name="pk_retention"),
        )
    if not inspector.has_table("housekeeping"):
        op.create_table(
            "housekeeping",
            sa.Column("job_id", sa.String(64), nullable=False),
            sa.Column("started_ns", sa.BigInteger, nullable=False),
            sa.Column("ended_ns", sa.BigInteger, nullable=False),
            sa.Column("status", sa.String(32), nullable=False),
            sa.Column("figures", sa.JSON, nullable=False),
            sa.PrimaryKeyConstraint("job_id", name="pk_housekeeping"),
        )


def downgrade() -> None:
    op.drop_table("housekeeping")
    op.drop_table("retention")
    for table, column in reversed(_ADDED):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column.name)
