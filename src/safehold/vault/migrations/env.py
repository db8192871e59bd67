"""Alembic's environment for the vault catalog, configured in code: `catalog.upgrade` hands it a connection
inside its transaction (Config.attributes["connection"]); there is no alembic.ini and no offline mode."""

from __future__ import annotations

from alembic import context

from safehold.vault import catalog


def run() -> None:
    conn = context.config.attributes.get("connection")
    if context.is_offline_mode() or conn is None:
        raise RuntimeError("the catalog migrations run through safehold.vault.catalog.upgrade, on a connection")
    context.configure(
        connection=conn,
        target_metadata=catalog.metadata,
        version_table=catalog.VERSION_TABLE,
        render_as_batch=conn.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
