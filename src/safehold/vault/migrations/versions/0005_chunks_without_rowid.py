"""The chunk index on SQLite as a WITHOUT ROWID table: its rows live in the primary-key b-tree itself instead
of a rowid table plus a second b-tree holding (machine_id, chunk_id) again; about 80 bytes less per chunk,
a third of the embedded vault's catalog on a tree of small files. PostgreSQL is left as it is.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = 'machine_id, chunk_id, pack_id, "offset", length, kind, condemned_ns'


def _rebuild(without_rowid: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    op.execute(sa.text(
        "CREATE TABLE chunks_rebuilt (machine_id VARCHAR(64) NOT NULL, chunk_id BLOB NOT NULL, "
        'pack_id VARCHAR(64) NOT NULL, "offset" BIGINT NOT NULL, length INTEGER NOT NULL, '
        "kind SMALLINT NOT NULL, condemned_ns BIGINT, "
        "CONSTRAINT pk_chunks PRIMARY KEY (machine_id, chunk_id))" + (" WITHOUT ROWID" if without_rowid else "")))
    op.execute(sa.text(f"INSERT INTO chunks_rebuilt ({_COLUMNS}) SELECT {_COLUMNS} FROM chunks"))  # noqa: S608 (constant)
    op.execute(sa.text("DROP TABLE chunks"))
    op.execute(sa.text("ALTER TABLE chunks_rebuilt RENAME TO chunks"))


def upgrade() -> None:
    _rebuild(without_rowid=True)


def downgrade() -> None:
    _rebuild(without_rowid=False)
