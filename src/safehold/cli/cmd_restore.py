"""`safehold restore`: recreate a recovery point, or parts of it, below a target folder."""

from __future__ import annotations

import os

import click

from safehold.agent.backup import open_meta
from safehold.agent.joblock import JobLock
from safehold.agent.reader import ChunkReader
from safehold.agent.restore import RestoreEngine
from safehold.cli.context import load_agent, resolve_rp
from safehold.cli.render import EventRenderer, emit_json, human_bytes
from safehold.errors import raise_error
from safehold.formats.chunks import Sealer
from safehold.i18n import _
from safehold.model import JobStatus

EXIT_WARNINGS = 3


@click.command("restore")
@click.argument("recovery_point")
@click.argument("paths", nargs=-1)
@click.option("--target", required=True, type=click.Path(file_okay=False),
              help="Folder to restore into; the original paths are recreated below it.")
@click.option("--no-acls", is_flag=True, help="Do not restore POSIX ACLs.")
@click.option("--no-owner", is_flag=True, help="Do not restore owners (default when not root).")
@click.option("--passphrase-file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def command(obj: dict[str, str | None], recovery_point: str, paths: tuple[str, ...], target: str, no_acls: bool,
            no_owner: bool, passphrase_file: str | None, as_json: bool) -> None:
    """Restore RECOVERY_POINT (an id, a prefix of one, or `latest`) into --target.

    PATHS limit the restore to those files or folders, given as backed-up absolute paths.
    """
    agent = load_agent(obj.get("home"), passphrase_file)
    rp = resolve_rp(agent, recovery_point)
    open_meta(Sealer(agent.keys), rp)  # the catalog row must match what this machine sealed
    if os.path.exists(target) and not os.path.isdir(target):
        raise_error("InvalidArgument", what=f"--target {target} is not a folder")
    renderer = EventRenderer(as_json)
    reader = ChunkReader(agent.vault, agent.machine_id, Sealer(agent.keys))
    engine = RestoreEngine(reader, renderer, with_owner=False if no_owner else None, with_acls=not no_acls)
    with JobLock(agent.cache.lock_file, "restore"):
        result = engine.run(rp, target, list(paths) or None)
    renderer.end_line()
    if as_json:
        emit_json({"event": "summary", "status": str(result.status), "recovery_point": rp.rp_id,
                   "files": result.files, "dirs": result.dirs, "other": result.other,
                   "bytes_written": result.bytes_written, "failed": len(result.failed)})
    else:
        click.echo(_("Restored {files} files, {dirs} folders, {other} other items, {size} from {rp} into {target}.")
                   .format(files=result.files, dirs=result.dirs, other=result.other,
                           size=human_bytes(result.bytes_written), rp=rp.rp_id[:8], target=target))
        if result.failed:
            click.echo(_("{count} item(s) could not be restored; see the warnings above.").format(
                count=len(result.failed)), err=True)
    if result.status == JobStatus.FAILED:
        raise SystemExit(1)
    if result.status == JobStatus.WARNINGS:
        raise SystemExit(EXIT_WARNINGS)
