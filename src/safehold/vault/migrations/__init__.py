"""Alembic revisions of the vault catalog's schema; `safehold.vault.catalog.upgrade` runs them.

The schema itself is the Table definitions in `safehold.vault.catalog`. To change it: edit those, then add a
revision here that makes the same change (written by hand, or drafted by Alembic's autogenerate against a
scratch database at the previous head:
`catalog.upgrade(eng)` on a fresh SQLite file, then, with `conn` from `eng.begin()`,
`alembic.command.revision(catalog._alembic_config(conn), message="...", autogenerate=True)`), and set
`catalog.HEAD` to its id. tests/test_catalog.py fails until `upgrade` on an empty database gives exactly the
tables of `catalog.metadata`, on SQLite and on PostgreSQL.

Revisions must keep working on catalogs that open concurrently: a vault server only reads the version
(`catalog.check_current`); only `safehold vault migrate` and `vault init` write it.
"""
