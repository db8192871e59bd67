"""A recovery point's references in a table of their own (`point_refs`), out of `recovery_points`.

The references are 32 bytes per chunk (6.4 MB for 200,000 files). Kept in the point's row, every listing of
points read them: SQLite follows a blob's overflow pages to reach the columns stored after it, so a backup's
look for the previous point read every point's references, more with each point kept.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    # A catalog made before schema versions gets every table at head from revision 0001: nothing to move then.
    if not sa.inspect(op.get_bind()).has_table("point_refs"):
        op.create_table(
            "point_refs",
            sa.Column("rp_id", sa.String(64), nullable=False),
            sa.Column("refs", sa.LargeBinary, nullable=False),
            sa.PrimaryKeyConstraint("rp_id", name="pk_point_refs"),
        )
    if "refs" in _columns("recovery_points"):
        op.execute(sa.text("INSERT INTO point_refs (rp_id, refs) SELECT rp_id, refs FROM recovery_points"))
        with op.batch_alter_table("recovery_points") as batch:
            batch.drop_column("refs")


def downgrade() -> None:
    with op.batch_alter_table("recovery_points") as batch:
        batch.add_column(sa.Column("refs", sa.LargeBinary))
    op.execute(sa.text("UPDATE recovery_points SET refs = (SELECT p.refs FROM point_refs p "
                       "WHERE p.rp_id = recovery_points.rp_id)"))
    op.drop_table("point_refs")
