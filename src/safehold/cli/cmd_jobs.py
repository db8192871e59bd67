"""`safehold jobs`: the job history of this machine; one job in detail; stopping a running job."""

from __future__ import annotations

import time
from pathlib import Path

import click

from safehold.agent.jobs import Job, JobHistory
from safehold.cli.context import agent_home
from safehold.cli.render import emit_json, human_bytes, human_time, table
from safehold.errors import raise_error
from safehold.i18n import N_, _
from safehold.model import JobStatus

STATUS_TEXT = {
    JobStatus.RUNNING: N_("Running"), JobStatus.COMPLETED: N_("Completed"),
    JobStatus.WARNINGS: N_("Completed with warnings"), JobStatus.FAILED: N_("Failed"),
    JobStatus.CANCELLED: N_("Cancelled"),
}
KIND_TEXT = {"backup": N_("backup"), "restore": N_("restore"), "manual": N_("manual"), "scheduled": N_("scheduled")}


def _history(obj: dict[str, str | None]) -> JobHistory:
    home_dir = obj.get("home")
    reg = agent_home(home_dir).load()
    return JobHistory(reg.cache.jobs_db)


def _duration(job: Job) -> str:
    if job.ended_ns is None:
        return "-"
    return f"{(job.ended_ns - job.started_ns) / 1e9:.1f} s"


@click.group("jobs", invoke_without_command=True)
@click.option("--limit", "-n", type=click.IntRange(1, 100_000), default=30, show_default=True,
              help="How many of the newest jobs to list.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def command(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List this machine's jobs, oldest first: type, start, duration, status, files, bytes, warnings."""
    if ctx.invoked_subcommand is not None:
        return
    with _history(ctx.obj) as history:
        jobs = history.recent(limit)
    if as_json:
        for job in jobs:
            emit_json(job.as_dict())
        return
    if not jobs:
        click.echo(_("No jobs yet."))
        return
    head = (_("JOB"), _("TYPE"), _("TRIGGER"), _("STARTED"), _("DURATION"), _("STATUS"), _("FILES"), _("SIZE"),
            _("WARNINGS"))
    rows = [(j.job_id[:8], _(KIND_TEXT.get(j.kind, j.kind)), _(KIND_TEXT.get(j.trigger, j.trigger)),
             human_time(j.started_ns), _duration(j), _(STATUS_TEXT[j.status]), str(j.files), human_bytes(j.bytes),
             str(j.warnings)) for j in jobs]
    for line in table([head, *rows], right=frozenset({6, 7, 8})):
        click.echo(line)


@command.command("show")
@click.argument("job")
@click.option("--failed-files", is_flag=True, help="Print the job's failed-file list.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(obj: dict[str, str | None], job: str, failed_files: bool, as_json: bool) -> None:
    """Show one job (an id, a prefix of at least 4 characters, or `last`)."""
    with _history(obj) as history:
        j = history.get(job)
    lines = _failed_lines(j) if failed_files else []
    if as_json:
        doc = j.as_dict()
        if failed_files:
            doc["failed_files"] = [dict(zip(("path", "id", "code", "reason", "action"), ln.split("\t"), strict=False))
                                   for ln in lines]
        emit_json(doc)
        return
    click.echo(_("Job {job}").format(job=j.job_id))
    click.echo(_("  Type:       {kind} ({trigger})").format(kind=_(KIND_TEXT.get(j.kind, j.kind)),
                                                          trigger=_(KIND_TEXT.get(j.trigger, j.trigger))))
    click.echo(_("  Status:     {status}").format(status=_(STATUS_TEXT[j.status])))
    click.echo(_("  Started:    {when}").format(when=human_time(j.started_ns)))
    if j.ended_ns is not None:
        click.echo(_("  Ended:      {when} ({duration})").format(when=human_time(j.ended_ns), duration=_duration(j)))
    click.echo(_("  Files:      {files}, {size}").format(files=j.files, size=human_bytes(j.bytes)))
    if j.recovery_point:
        click.echo(_("  Recovery point: {rp}").format(rp=j.recovery_point))
    if j.error_id:
        click.echo(_("  Error:      {id} {text}").format(id=j.error_id, text=j.error_text or ""))
    if j.warnings:
        click.echo(_("  Warnings:   {count} item(s) skipped; list in {path}").format(count=j.warnings,
                                                                                  path=j.failed_list))
    if failed_files:
        if not lines:
            click.echo(_("No failed files."))
        for ln in lines:
            click.echo(ln)


def _failed_lines(job: Job) -> list[str]:
    if not job.failed_list:
        return []
    try:
        return Path(job.failed_list).read_text().splitlines()
    except OSError as exc:
        raise_error("InvalidArgument", what=f"the failed-file list {job.failed_list}: {exc.strerror}")


@command.command("stop")
@click.argument("job")
@click.option("--wait", "wait_s", type=click.FloatRange(0, 3600), default=60, show_default=True,
              help="Seconds to wait for the job to end.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stop(obj: dict[str, str | None], job: str, wait_s: float, as_json: bool) -> None:
    """Cancel a running job cleanly: what it stored stays and is not sent again by the next job."""
    with _history(obj) as history:
        j = history.stop(job)
        deadline = time.monotonic() + wait_s
        current = history.get(j.job_id)
        while current.running and time.monotonic() < deadline:
            time.sleep(0.1)  # the job's own process writes its end; poll the history until it does
            current = history.get(j.job_id)
    if as_json:
        emit_json(current.as_dict())
    elif current.running:
        click.echo(_("Asked job {job} to stop; it is still ending.").format(job=j.job_id[:8]))
    else:
        click.echo(_("Job {job} ended: {status}.").format(job=j.job_id[:8], status=_(STATUS_TEXT[current.status])))
    if current.running:
        raise SystemExit(1)
