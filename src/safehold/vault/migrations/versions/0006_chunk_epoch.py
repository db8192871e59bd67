"""A per-machine count of removals from the chunk index (`machines.chunk_epoch`), and the count each recovery
point was committed at (`recovery_points.chunk_epoch`). While the count has not moved since a point was
committed, every chunk that point references is still indexed and live, so a commit may check only the
references that point lacks (docs/retention.md, "Chunk epoch"). Points committed before this revision have
no count and are never used that way.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def _has(table: str) -> bool:
    return any(c["name"] == "chunk_epoch" for c in sa.inspect(op.get_bind()).get_columns(table))


def upgrade() -> None:
    # A catalog made before schema versions gets every table at head from revision 0001: nothing to add then.
    if not _has("machines"):
        with op.batch_alter_table("machines") as batch:
            batch.add_column(sa.Column("chunk_epoch", sa.BigInteger, nullable=False, server_default="0"))
    if not _has("recovery_points"):
        with op.batch_alter_table("recovery_points") as batch:
            batch.add_column(sa.Column("chunk_epoch", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("recovery_points") as batch:
        batch.drop_column("chunk_epoch")
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("chunk_epoch")
