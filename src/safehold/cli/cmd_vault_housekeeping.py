"""`safehold vault housekeeping`: expire recovery points by retention and free the space no point uses, once.

The vault server runs the same service on its own schedule (`vault serve --housekeeping-interval`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from safehold.cli.cmd_vault import open_vault
from safehold.cli.render import emit_json, human_bytes
from safehold.errors import raise_error
from safehold.i18n import _
from safehold.vault.housekeeping import HOUR_NS, Housekeeping


@click.command("housekeeping")
@click.argument("path", type=click.Path(file_okay=False, exists=True))
@click.option("--dry-run", is_flag=True, help="Report what would be expired and freed; change nothing.")
@click.option("--grace-minutes", type=click.IntRange(0, 7 * 24 * 60), default=HOUR_NS // 60 // 10**9,
              show_default=True, help="Keep the files of dropped packs this long for restores that already "
                                      "located data in them.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as a JSON line.")
def command(path: str, dry_run: bool, grace_minutes: int, as_json: bool) -> None:
    """Run housekeeping on the vault in folder PATH: needs no key, and backups may keep running."""
    svc = open_vault(Path(path))
    try:
        fig = Housekeeping(svc, grace_ns=grace_minutes * 60 * 10**9).run(dry_run=dry_run)
    finally:
        svc.close()
    if fig is None:
        raise_error("HousekeepingRunning")
    if as_json:
        emit_json({"event": "housekeeping", **asdict(fig)})
        return
    head = _("Housekeeping (dry run): nothing was changed.") if dry_run else _("Housekeeping completed.")
    click.echo(head)
    click.echo(_("Recovery points expired: {n}").format(n=fig.points_expired))
    click.echo(_("Chunks freed: {n} ({size}); condemned, to be freed once older backups end: {c}").format(
        n=fig.chunks_deleted, size=human_bytes(fig.bytes_deleted), c=fig.chunks_condemned))
    click.echo(_("Packs dropped: {n}, of them rewritten: {r}; pack files deleted: {b} ({size})").format(
        n=fig.packs_deleted, r=fig.packs_rewritten, b=fig.blobs_deleted, size=human_bytes(fig.blob_bytes_freed)))
