"""`safehold vault jobs`: every machine's jobs as their agents reported them, and the vault's housekeeping runs."""

from __future__ import annotations

from typing import Any

import click

from safehold.cli.cmd_jobs import KIND_TEXT, STATUS_TEXT
from safehold.cli.cmd_vault import Remote, _folder, open_vault
from safehold.cli.render import emit_json, human_bytes, human_time, table
from safehold.errors import raise_error
from safehold.formats import wire
from safehold.i18n import _
from safehold.model import JobStatus, MachineId
from safehold.vault.housekeeping import Housekeeping


@click.command("jobs")
@click.argument("vault")
@click.option("--machine", metavar="ID|HOST", help="Only this machine's jobs (its id, an id prefix, or host name).")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=50, show_default=True)
@Remote.options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job, then the housekeeping runs.")
def command(vault: str, machine: str | None, limit: int, admin_token_file: str | None, fingerprint: str | None,
            as_json: bool) -> None:
    """List the jobs of VAULT's machines (a folder, or https://HOST:PORT with the admin token), oldest first."""
    if vault.startswith("https://"):
        admin = Remote.admin(vault, admin_token_file, fingerprint)
        machines = admin.machines()
        wanted = _machine(machines, machine) if machine else None
        doc = admin.jobs(limit, wanted)
        jobs, housekeeping = doc["jobs"], doc["housekeeping"]
    else:
        svc = open_vault(_folder(vault))
        try:
            machines = svc.machines()
            wanted = _machine(machines, machine) if machine else None
            hosts = svc.job_machines()
            jobs = [{**wire.job_to_json(j), "machine_id": mid, "hostname": hosts.get(mid, "?")}
                    for mid, j in svc.jobs_with_machines(MachineId(wanted) if wanted else None, limit)]
            housekeeping = Housekeeping(svc).history(limit)
        finally:
            svc.close()
    if as_json:
        for j in jobs:
            emit_json({"event": "job", **j})
        for h in housekeeping:
            emit_json({"event": "housekeeping", **h})
        return
    if not jobs:
        click.echo(_("No jobs reported yet."))
    else:
        head = (_("MACHINE"), _("JOB"), _("TYPE"), _("TRIGGER"), _("STARTED"), _("STATUS"), _("FILES"), _("SIZE"),
                _("WARNINGS"))
        rows = [(j["hostname"], j["job_id"][:8], _(KIND_TEXT.get(j["kind"], j["kind"])),
                 _(KIND_TEXT.get(j["trigger"], j["trigger"])), human_time(j["started_ns"]),
                 _(STATUS_TEXT[JobStatus(j["status"])]), str(j["files"]), human_bytes(j["bytes"]),
                 str(j["warnings"])) for j in jobs]
        for line in table([head, *rows], right=frozenset({6, 7, 8})):
            click.echo(line)
    if housekeeping:
        last = housekeeping[0]
        click.echo(_("Last housekeeping: {when}, {status}.").format(
            when=human_time(int(last["started_ns"])), status=_(STATUS_TEXT.get(JobStatus(last["status"]),
                                                                               last["status"]))))


def _machine(machines: list[dict[str, Any]], ref: str) -> str:
    found = [m["machine_id"] for m in machines if m["hostname"] == ref or m["machine_id"].startswith(ref.lower())]
    if len(found) != 1:
        raise_error("InvalidArgument", what=f"--machine {ref}: " + ("matches several machines" if found else
                                                                    "no such machine in this vault"))
    return str(found[0])
