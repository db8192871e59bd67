"""`safehold backup`: back up files and folders into a new recovery point (by hand, or for the daemon)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time

import click

from safehold.agent import policyfile
from safehold.agent import settings as agent_settings
from safehold.agent.backupjob import MANUAL, SCHEDULED, BackupRequest, request_from_policy, run_backup
from safehold.agent.jobs import JobHistory
from safehold.agent.registration import local_hostname
from safehold.agent.throttle import Pacer, paced
from safehold.cli.context import Agent, agent_home, load_agent, vault_folder
from safehold.cli.render import EventRenderer, emit_json, human_bytes
from safehold.errors import SafeholdError, raise_error
from safehold.i18n import _
from safehold.model import JobStatus

EXIT_WARNINGS = 3


@click.command("backup")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--exclude", "-e", multiple=True, metavar="PATTERN",
              help="Skip matching items: a pattern with '/' matches the full path, else the name (fnmatch).")
@click.option("--passphrase-file", metavar="FILE", help="Passphrase file (default: the one stored at registration).")
@click.option("--keep-until", metavar="DATE",
              help="Keep this recovery point at least until DATE (YYYY-MM-DD, or an ISO time), whatever the "
                   "retention says.")
@click.option("--scheduled", is_flag=True, hidden=True, help="Started by the agent daemon for the schedule.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: progress, failed items, summary.")
@click.pass_obj
def command(obj: dict[str, str | None], paths: tuple[str, ...], exclude: tuple[str, ...],
            passphrase_file: str | None, keep_until: str | None, scheduled: bool, as_json: bool) -> None:
    """Back up PATHS (files or folders) into a new recovery point; without PATHS, what the policy names.

    Files that cannot be read are skipped and listed; the job then ends "completed with warnings"
    (exit code 3) and everything else is kept. Ctrl-C or `safehold jobs stop` cancels it (exit code 130).
    """
    trigger = SCHEDULED if scheduled else MANUAL
    keep_until_ns = _keep_until(keep_until) if keep_until else None
    try:
        agent = load_agent(obj.get("home"), passphrase_file)
        policy = policyfile.load(agent.home)
    except SafeholdError as exc:
        _record_refused(obj.get("home"), trigger, exc)
        raise
    if paths:
        request = BackupRequest(list(paths), list(exclude), trigger)
    elif policy is not None:
        request = request_from_policy(policy, trigger, list(exclude))
    else:
        raise_error("PolicyNotSet")
    _run(agent, dataclasses.replace(request, keep_until_ns=keep_until_ns), as_json)


def _keep_until(text: str) -> int:
    """A date (the end of that day, local time) or an ISO time; it must lie in the future."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise_error("InvalidArgument", what=f"--keep-until {text!r}: give a date as 2027-06-30 or an ISO time")
    if len(text) <= 10:  # a date alone: keep through that whole day
        when = when.replace(hour=23, minute=59, second=59)
    if when.tzinfo is None:
        when = when.astimezone()
    if when.timestamp() <= time.time():
        raise_error("InvalidArgument", what=f"--keep-until {text}: the date has passed")
    return int(when.timestamp()) * 1_000_000_000


def _record_refused(home_dir: str | None, trigger: str, exc: SafeholdError) -> None:
    """A job that could not start (vault unreachable, key unreadable) still shows in the job history."""
    try:
        reg = agent_home(home_dir).load()
        with JobHistory(reg.cache.jobs_db) as history:
            history.refused("backup", trigger, exc.spec.id_text, exc.text)
    except (SafeholdError, OSError):
        pass  # not registered, or no cache folder: there is no history to write to


def _run(agent: Agent, request: BackupRequest, as_json: bool) -> None:
    cache = agent.cache
    skip = [str(cache.root), str(agent.home.root)]
    if agent.reg.vault_url.startswith("file://"):
        skip.append(str(vault_folder(agent.reg.vault_url)))
    limits = agent_settings.limits(agent_settings.load(agent.home))
    cancel = threading.Event()
    vault = paced(agent.vault, Pacer(limits, cancel=cancel)) if limits is not None else agent.vault
    renderer = EventRenderer(as_json)
    outcome = run_backup(vault, agent.machine_id, agent.keys, cache, request, renderer, skip, local_hostname(),
                         cancel)
    renderer.end_line()
    if outcome.result is None:  # cancelled
        if as_json:
            emit_json({"event": "summary", "job_id": outcome.job_id, "status": str(outcome.status)})
        else:
            click.echo(_("Backup cancelled; no recovery point was made. What was uploaded is kept and not sent "
                         "again next time."))
        raise SystemExit(130)
    rp = outcome.result.recovery_point
    s = rp.stats
    failed_list = outcome.failed_list
    if as_json:
        emit_json({"event": "summary", "job_id": outcome.job_id, "status": str(rp.status),
                   "recovery_point": rp.rp_id, "files": s.files, "dirs": s.dirs, "other": s.other,
                   "bytes_scanned": s.bytes_scanned, "bytes_read": s.bytes_read, "chunks_new": s.chunks_new,
                   "bytes_new_stored": s.bytes_new_stored, "failed_files": s.failed_files,
                   "failed_files_list": str(failed_list) if failed_list else None, "duration_s": s.duration_s})
    else:
        click.echo(_("Recovery point {rp} created: {files} files, {dirs} folders, {other} other, {scanned} scanned, "
                     "{read} read, {new} new in the vault, {seconds} s.").format(
            rp=rp.rp_id[:8], files=s.files, dirs=s.dirs, other=s.other, scanned=human_bytes(s.bytes_scanned),
            read=human_bytes(s.bytes_read), new=human_bytes(s.bytes_new_stored), seconds=f"{s.duration_s:.1f}"))
        if failed_list:
            click.echo(_("Completed with warnings: {count} item(s) skipped; list in {path}").format(
                count=s.failed_files, path=failed_list))
    if rp.status == JobStatus.WARNINGS:
        raise SystemExit(EXIT_WARNINGS)
