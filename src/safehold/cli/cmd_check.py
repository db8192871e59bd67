"""`safehold check`: verify this machine's data in the vault."""

from __future__ import annotations

import click

from safehold.agent.check import CheckEngine
from safehold.agent.reader import ChunkReader
from safehold.cli.context import load_agent
from safehold.cli.render import EventRenderer, emit_json
from safehold.errors import raise_error
from safehold.formats.chunks import Sealer
from safehold.i18n import _


@click.command("check")
@click.option("--read-data", is_flag=True, help="Also read and verify every stored byte (slow).")
@click.option("--repair", is_flag=True,
              help="Drop damaged chunks from the index so that the next backup stores their data again.")
@click.option("--passphrase-file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def command(obj: dict[str, str | None], read_data: bool, repair: bool, passphrase_file: str | None,
            as_json: bool) -> None:
    """Check the index, every tree and (with --read-data) all data; list problems with the recovery
    points they affect."""
    agent = load_agent(obj.get("home"), passphrase_file)
    renderer = EventRenderer(as_json)
    reader = ChunkReader(agent.vault, agent.machine_id, Sealer(agent.keys))
    report = CheckEngine(agent.vault, reader, renderer).run(read_data, repair)
    renderer.end_line()
    problems = [{"problem": p.what, "recovery_points": list(p.recovery_points)} for p in report.problems]
    if as_json:
        emit_json({"event": "summary", "recovery_points": report.recovery_points, "trees": report.trees,
                   "packs_read": report.packs_read, "chunks_verified": report.chunks_verified,
                   "chunks_forgotten": report.chunks_forgotten, "notes": report.notes,
                   "problems": problems})
    else:
        for note in report.notes:
            click.echo(_("note: {text}").format(text=note))
        for p in report.problems:
            affected = ", ".join(r[:8] for r in p.recovery_points) or _("none")
            click.echo(_("problem: {what}; affects recovery points: {affected}").format(what=p.what, affected=affected))
        if read_data:
            click.echo(_("Checked {rps} recovery points, {trees} trees, {packs} packs, {chunks} chunks: "
                         "{problems} problem(s).").format(rps=report.recovery_points, trees=report.trees,
                                                           packs=report.packs_read, chunks=report.chunks_verified,
                                                           problems=len(report.problems)))
        else:
            click.echo(_("Checked {rps} recovery points, {trees} trees: {problems} problem(s).").format(
                rps=report.recovery_points, trees=report.trees, problems=len(report.problems)))
        if report.chunks_forgotten:
            click.echo(_("{count} damaged chunk(s) dropped from the index: back up again to store their data anew; "
                         "recovery points that use them heal when it is.").format(count=report.chunks_forgotten))
    if report.problems:
        raise_error("CheckFailed", count=len(report.problems))
