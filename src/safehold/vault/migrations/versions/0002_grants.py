"""Grants: read-only access to one machine's data for an alternate-machine restore.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("grants"):  # a catalog completed by 0001 from the current tables
        return
    op.create_table(
        "grants",
        sa.Column("token_digest", sa.String(64), primary_key=True),
        sa.Column("machine_id", sa.String(64), nullable=False),
        sa.Column("grantee", sa.String(64), nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("expires_ns", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("grants")
