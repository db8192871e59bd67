"""`safehold backup`: back up files and folders into a new recovery point."""

from __future__ import annotations

import click

from safehold.agent.backup import BackupEngine
from safehold.agent.checksums import ChecksumStore
from safehold.agent.events import Notice
from safehold.agent.joblock import JobLock
from safehold.agent.joblog import write_failed_files
from safehold.agent.registration import local_hostname
from safehold.cli.context import load_agent, vault_folder
from safehold.cli.render import EventRenderer, emit_json, human_bytes
from safehold.i18n import _
from safehold.model import JobStatus

EXIT_WARNINGS = 3


@click.command("backup")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--exclude", "-e", multiple=True, metavar="PATTERN",
              help="Skip matching items: a pattern with '/' matches the full path, else the name (fnmatch).")
@click.option("--passphrase-file", metavar="FILE", help="Passphrase file (default: the one stored at registration).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines: progress, failed items, summary.")
@click.pass_obj
def command(obj: dict[str, str | None], paths: tuple[str, ...], exclude: tuple[str, ...],
            passphrase_file: str | None, as_json: bool) -> None:
    """Back up PATHS (files or folders) into a new recovery point.

    Files that cannot be read are skipped and listed; the job then ends "completed with warnings"
    (exit code 3) and everything else is kept.
    """
    agent = load_agent(obj.get("home"), passphrase_file)
    cache = agent.cache
    cache.ensure()
    skip = [str(cache.root), str(agent.home.root)]
    if agent.reg.vault_url.startswith("file://"):
        skip.append(str(vault_folder(agent.reg.vault_url)))
    renderer = EventRenderer(as_json)
    with JobLock(cache.lock_file, "backup"):
        store, damage = ChecksumStore.open_or_reset(cache.checksum_store, agent.keys.key_id)
        try:
            if damage:
                renderer(Notice("SalChecksumStoreInitializationFailed",
                                f"the checksum store was damaged ({damage}) and was set aside"))
            previous = agent.vault.recovery_points(agent.machine_id)
            engine = BackupEngine(agent.vault, agent.machine_id, agent.keys, store, renderer, exclude, skip,
                                  hostname=local_hostname())
            result = engine.run(list(paths), previous[-1] if previous else None)
        finally:
            store.close()
    renderer.end_line()
    failed_list = write_failed_files(cache.logs, result.job_id, result.failed) if result.failed else None
    rp = result.recovery_point
    s = rp.stats
    if as_json:
        emit_json({"event": "summary", "job_id": result.job_id, "status": str(rp.status),
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
