"""`safehold restore`: recreate a recovery point, or parts of it, below a target folder."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

import click

from safehold.agent import grants
from safehold.agent.backup import open_meta
from safehold.agent.backupjob import MANUAL
from safehold.agent.joblog import write_failed_files
from safehold.agent.jobs import JobHistory
from safehold.agent.reader import ChunkReader
from safehold.agent.registration import open_other_machine
from safehold.agent.restore import COPY, EXISTING, RestoreEngine, RestoreResult
from safehold.cli.context import (
    Agent,
    connect_with_token,
    load_agent,
    pick_rp,
    prompt_passphrase,
    read_passphrase_file,
)
from safehold.cli.render import EventRenderer, emit_json, human_bytes
from safehold.errors import SafeholdError, raise_error
from safehold.formats import keys as keyfmt
from safehold.formats.chunks import Sealer
from safehold.formats.keys import MachineKeys
from safehold.i18n import _
from safehold.model import JobStatus, MachineId, RecoveryPoint
from safehold.ports import VaultClient

EXIT_WARNINGS = 3


@click.command("restore")
@click.argument("recovery_point")
@click.argument("paths", nargs=-1)
@click.option("--target", required=True, type=click.Path(file_okay=False),
              help="Folder to restore into; the original paths are recreated below it.")
@click.option("--existing", type=click.Choice(EXISTING), default=COPY, show_default=True,
              help="For an item already at the target: restore a copy beside it (NAME.restored), overwrite it, or "
                   "skip it. Folders are always merged.")
@click.option("--no-acls", is_flag=True, help="Do not restore POSIX ACLs.")
@click.option("--no-owner", is_flag=True, help="Do not restore owners (default when not root).")
@click.option("--from-machine", metavar="NAME", help="Restore another machine's data: its host name or id. Needs "
                                                     "--credentials and that machine's passphrase.")
@click.option("--credentials", "creds", type=click.Path(dir_okay=False),
              help="With --from-machine: a credentials file of the vault (used up by this restore).")
@click.option("--source-passphrase-file", metavar="FILE",
              help="With --from-machine: file holding the other machine's passphrase (else it is asked for).")
@click.option("--passphrase-file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def command(obj: dict[str, str | None], recovery_point: str, paths: tuple[str, ...], target: str, existing: str,
            no_acls: bool, no_owner: bool, from_machine: str | None, creds: str | None,
            source_passphrase_file: str | None, passphrase_file: str | None, as_json: bool) -> None:
    """Restore RECOVERY_POINT (an id, a prefix of one, or `latest`) into --target.

    PATHS limit the restore to those files or folders, given as backed-up absolute paths.
    """
    agent = load_agent(obj.get("home"), passphrase_file)
    if os.path.exists(target) and not os.path.isdir(target):
        raise_error("InvalidArgument", what=f"--target {target} is not a folder")
    if not from_machine and (creds or source_passphrase_file):
        raise_error("InvalidArgument", what="--credentials and --source-passphrase-file go with --from-machine")
    agent.cache.ensure()
    with JobHistory(agent.cache.jobs_db) as history:
        lock = history.lock(agent.cache.lock_file, "restore", MANUAL, "restore")
        job_id = history.start("restore")
        status, result = JobStatus.FAILED, None
        try:
            vault, machine_id, keys = agent.vault, agent.machine_id, agent.keys
            if from_machine:
                vault, machine_id, keys = _other_machine(agent, from_machine, creds, source_passphrase_file, as_json)
            rp = pick_rp(vault.recovery_points(machine_id), recovery_point)
            open_meta(Sealer(keys), rp)  # the catalog row must match what its machine sealed
            status, result, failed_list = _restore(vault, machine_id, keys, rp, paths, target, existing, no_acls,
                                                   no_owner, agent, as_json, job_id)
            history.finish(job_id, status, files=result.files, nbytes=result.bytes_written,
                           warnings=len(result.failed), recovery_point=rp.rp_id,
                           failed_list=str(failed_list) if failed_list else None)
        except SafeholdError as exc:
            history.finish(job_id, JobStatus.FAILED, error_id=exc.spec.id_text, error_text=exc.text)
            raise
        finally:
            lock.__exit__(None, None, None)
            history.report(agent.vault, agent.machine_id)
    if status == JobStatus.CANCELLED:
        raise SystemExit(130)
    if status == JobStatus.FAILED:
        raise SystemExit(1)
    if status == JobStatus.WARNINGS:
        raise SystemExit(EXIT_WARNINGS)


def _other_machine(agent: Agent, name: str, creds: str | None, passphrase_file: str | None,
                   as_json: bool) -> tuple[VaultClient, MachineId, MachineKeys]:
    """Another machine's data: through a grant saved by an earlier try, or a new one for a credentials file."""
    passphrase = read_passphrase_file(passphrase_file) if passphrase_file else \
        prompt_passphrase(confirm=False, label=_("Passphrase of {machine}: ").format(machine=name))
    saved = grants.load(agent.home, name, time.time_ns())
    if saved is not None:
        vault = connect_with_token(agent, saved.token)
        machine_id, host = MachineId(saved.machine_id), saved.hostname
        keys = keyfmt.unwrap(vault.wrapped_key(machine_id), passphrase)
    else:
        if not creds:
            raise_error("InvalidArgument", what="--from-machine needs --credentials FILE, issued by the vault")
        info, keys, token = open_other_machine(agent.vault, Path(creds), name, passphrase, agent.machine_id)
        grants.save(agent.home, name, grants.Grant(info.machine_id, info.hostname, token,
                                                   time.time_ns() + grants.GRANT_DAYS_NS))
        vault, machine_id, host = connect_with_token(agent, token), info.machine_id, info.hostname
    if not as_json:
        click.echo(_("Restoring from {host} (machine {machine}).").format(host=host, machine=machine_id[:8]))
    return vault, machine_id, keys


def _restore(vault: VaultClient, machine_id: MachineId, keys: MachineKeys, rp: RecoveryPoint,
             paths: tuple[str, ...], target: str, existing: str, no_acls: bool, no_owner: bool, agent: Agent,
             as_json: bool, job_id: str) -> tuple[JobStatus, RestoreResult, Path | None]:
    renderer = EventRenderer(as_json)
    reader = ChunkReader(vault, machine_id, Sealer(keys))
    engine = RestoreEngine(reader, renderer, with_owner=False if no_owner else None, with_acls=not no_acls,
                           existing=existing)
    cancelled = False

    def cancel(_sig: int, _frame: FrameType | None) -> None:
        engine.cancel.set()  # the engine stops at its next safe point (SIGTERM cancels like Ctrl-C)

    previous = {sig: signal.signal(sig, cancel) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        engine.run(rp, target, list(paths) or None)
    except KeyboardInterrupt:
        cancelled = True  # what was restored stays; the file being written when it came is removed
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    result = engine.result
    status = JobStatus.CANCELLED if cancelled else result.status
    failed_list = write_failed_files(agent.cache.logs, f"restore-{job_id}", result.failed) \
        if result.failed else None
    renderer.end_line()
    if as_json:
        emit_json({"event": "summary", "status": str(status), "recovery_point": rp.rp_id,
                   "files": result.files, "dirs": result.dirs, "other": result.other,
                   "bytes_written": result.bytes_written, "failed": len(result.failed), "skipped": result.skipped,
                   "copies": result.copies, "replaced": result.replaced,
                   "failed_files_list": str(failed_list) if failed_list else None})
    else:
        if cancelled:
            click.echo(_("Restore cancelled. What was restored before stays in {target}.").format(target=target))
        click.echo(_("Restored {files} files, {dirs} folders, {other} other items, {size} from {rp} into {target}.")
                   .format(files=result.files, dirs=result.dirs, other=result.other,
                           size=human_bytes(result.bytes_written), rp=rp.rp_id[:8], target=target))
        if result.skipped or result.copies or result.replaced:
            click.echo(_("Already at the target: {skipped} skipped, {copies} restored as copies beside them, "
                         "{replaced} overwritten.").format(skipped=result.skipped, copies=result.copies,
                                                           replaced=result.replaced))
        if result.failed:
            click.echo(_("{count} item(s) could not be restored; the list is in {path}").format(
                count=len(result.failed), path=failed_list), err=True)
    return status, result, failed_list
