"""`safehold vault migrate PATH`: bring a vault's catalog to the schema of this safehold version."""

from __future__ import annotations

from pathlib import Path

import click

from safehold.cli.render import emit_json
from safehold.i18n import _
from safehold.vault.service import VaultService


@click.command("migrate")
@click.argument("path", type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def command(path: str, as_json: bool) -> None:
    """Upgrade the catalog of the vault at PATH (SQLite or PostgreSQL) to this version's schema.

    Run it once after upgrading safehold, with the vault's servers stopped; until then they refuse to open
    an older catalog. A catalog already current is left unchanged.
    """
    before, after = VaultService.migrate_folder(Path(path))
    if as_json:
        emit_json({"vault": str(Path(path).absolute()), "from_revision": before, "to_revision": after,
                   "changed": before != after})
    elif before == after:
        click.echo(_("Catalog already at revision {revision}; nothing to do.").format(revision=after))
    else:
        click.echo(_("Catalog migrated: {before} → {after}").format(
            before=before or _("none (made before schema versions)"), after=after))
