"""`safehold recovery-points`: list this machine's recovery points."""

from __future__ import annotations

import click

from safehold.agent.backup import open_meta
from safehold.cli.context import load_agent
from safehold.cli.render import emit_json, human_bytes, human_time, path_text, table
from safehold.errors import SafeholdError
from safehold.formats.chunks import Sealer
from safehold.i18n import N_, _

# job states as shown; the values themselves (Completed, CompletedWithWarnings...) stay in --json
STATUSES = (N_("Running"), N_("Completed"), N_("CompletedWithWarnings"), N_("Failed"), N_("Cancelled"))
COLUMNS = (N_("ID"), N_("Time"), N_("Status"), N_("Files"), N_("Size"), N_("Paths"))


@click.command("recovery-points")
@click.option("--passphrase-file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def command(obj: dict[str, str | None], passphrase_file: str | None, as_json: bool) -> None:
    """List the recovery points of this machine, oldest first."""
    agent = load_agent(obj.get("home"), passphrase_file)
    sealer = Sealer(agent.keys)
    rps = agent.vault.recovery_points(agent.machine_id)
    rows = []
    for rp in rps:
        try:
            meta = open_meta(sealer, rp)
            paths, host = [path_text(p) for p in meta.paths], meta.hostname
        except SafeholdError:
            paths, host = ["(metadata unreadable)"], "?"
        rows.append((rp, host, paths))
    if as_json:
        emit_json({"recovery_points": [
            {"id": rp.rp_id, "time": human_time(rp.created_ns), "created_ns": rp.created_ns,
             "status": str(rp.status), "hostname": host, "paths": paths, "files": rp.stats.files,
             "bytes": rp.stats.bytes_scanned, "bytes_new_stored": rp.stats.bytes_new_stored,
             "keep_until": human_time(rp.keep_until_ns) if rp.keep_until_ns else None}
            for rp, host, paths in rows]})
        return
    if not rows:
        click.echo(_("No recovery points yet. Create one with `safehold backup PATH`."))
        return
    lines: list[tuple[str, ...]] = [tuple(_(c) for c in COLUMNS)]
    lines += [(rp.rp_id[:8], human_time(rp.created_ns), _(str(rp.status)), str(rp.stats.files),
               human_bytes(rp.stats.bytes_scanned), ", ".join(paths)) for rp, _host, paths in rows]
    for line in table(lines, right=frozenset({3, 4})):
        click.echo(line)
