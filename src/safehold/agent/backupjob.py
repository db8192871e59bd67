"""One backup job from start to end, the same for `safehold backup` and the daemon's scheduled runs.

Takes the machine's job lock, records the job in the history, runs the engine, writes the failed-file list,
and turns Ctrl-C or SIGTERM (`safehold jobs stop`) into a cancelled job. It never prints: events go to the sink.
"""

from __future__ import annotations

import glob
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

from safehold.agent.backup import BackupEngine, BackupResult
from safehold.agent.checksums import ChecksumStore
from safehold.agent.events import EventSink, Notice
from safehold.agent.home import CacheFolder
from safehold.agent.joblog import write_failed_files
from safehold.agent.jobs import JobHistory
from safehold.errors import SafeholdError
from safehold.formats.keys import MachineKeys
from safehold.formats.policy import Policy
from safehold.model import JobStatus, MachineId, RecoveryPoint
from safehold.ports import VaultClient

MANUAL = "manual"
SCHEDULED = "scheduled"


@dataclass(frozen=True)
class BackupRequest:
    paths: list[str]
    excludes: list[str] = field(default_factory=list)
    trigger: str = MANUAL
    keep_until_ns: int | None = None


@dataclass(frozen=True)
class BackupOutcome:
    job_id: str
    status: JobStatus
    result: BackupResult | None  # None when cancelled
    failed_list: Path | None


def request_from_policy(policy: Policy, trigger: str, extra_excludes: list[str] | None = None) -> BackupRequest:
    """What a policy asks to back up: its folders, its exclusions, its file types, its non-recursive folders.

    A non-recursive folder keeps its files: the subfolders it has when the job starts are excluded by path.
    """
    spec = policy.files
    excludes = [_walked(p) if p.startswith("/") and not glob.has_magic(p) else p for p in spec.exclude]
    excludes += [*(_type_pattern(ext) for ext in spec.exclude_types), *(extra_excludes or [])]
    for folder in spec.non_recursive:
        walked = _walked(folder)
        try:
            with os.scandir(walked) as it:
                excludes += [glob.escape(os.path.join(walked, d.name)) for d in it if d.is_dir(follow_symlinks=False)]
        except OSError:
            pass  # the engine reports an unreadable folder itself
    return BackupRequest(list(spec.include), excludes, trigger)


def _walked(path: str) -> str:
    """A path as the backup walks it: symlinks among the folders above it resolved, as the engine resolves
    its targets, so that an exclusion by path matches below a symlinked parent too."""
    path = os.path.normpath(path)
    return path if path == "/" else os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _type_pattern(ext: str) -> str:
    """A file type such as .tmp as a pattern that matches it in any case (REPORT.TMP too)."""
    return "*" + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else glob.escape(c) for c in ext)


class _ShieldedCommit:
    """A vault client whose commit is not interrupted by a cancel: once the vault may have made the point,
    the job sees the commit through and ends with it."""

    def __init__(self, inner: VaultClient, shield: threading.Event) -> None:
        self._inner = inner
        self._shield = shield

    def commit(self, *args: Any) -> RecoveryPoint:
        self._shield.set()
        try:
            return self._inner.commit(*args)
        finally:
            self._shield.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def _signals_cancel(cancel: threading.Event, shield: threading.Event) -> Iterator[None]:
    """SIGTERM (from `safehold jobs stop` or systemd) and Ctrl-C cancel the job: `cancel` tells the upload
    thread (a throttled upload stops waiting), KeyboardInterrupt unwinds the engine, except during the commit."""

    def handler(_sig: int, _frame: FrameType | None) -> None:
        cancel.set()
        if not shield.is_set():
            raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def content_workers() -> int | None:
    """SAFEHOLD_BACKUP_WORKERS: how many processes read small files beside the walk (0: none); default one per
    core. A bad value is ignored."""
    value = os.environ.get("SAFEHOLD_BACKUP_WORKERS", "")
    return int(value) if value.isdigit() and int(value) <= 64 else None


def run_backup(vault: VaultClient, machine_id: MachineId, keys: MachineKeys, cache: CacheFolder,
               request: BackupRequest, events: EventSink, skip_dirs: list[str], hostname: str,
               cancel: threading.Event | None = None) -> BackupOutcome:
    """Run one backup job. Raises the job's error after recording it; a refused start is recorded too.

    `cancel` is set when a signal cancels the job (give the same event to a throttled vault's Pacer).
    """
    cache.ensure()
    job_id = uuid.uuid4().hex
    shield = threading.Event()
    vault = cast(VaultClient, _ShieldedCommit(vault, shield))
    with JobHistory(cache.jobs_db) as history:
        history.reap()  # a job whose process died shows as failed before this one starts
        try:
            lock = history.lock(cache.lock_file, "backup", request.trigger, f"backup {job_id}")
        except SafeholdError:
            history.report(vault, machine_id)
            raise
        try:
            history.start("backup", request.trigger, job_id)
            try:
                with _signals_cancel(cancel or threading.Event(), shield):
                    result = _engine_run(vault, machine_id, keys, cache, request, events, skip_dirs, hostname,
                                         job_id)
            except KeyboardInterrupt:
                history.finish(job_id, JobStatus.CANCELLED, error_id="700406",
                               error_text="cancelled by Ctrl-C, SIGTERM or `safehold jobs stop`")
                history.report(vault, machine_id)
                return BackupOutcome(job_id, JobStatus.CANCELLED, None, None)
            except SafeholdError as exc:
                history.finish(job_id, JobStatus.FAILED, error_id=exc.spec.id_text, error_text=exc.text)
                history.report(vault, machine_id)
                raise
            except BaseException as exc:
                history.finish(job_id, JobStatus.FAILED, error_id="700003", error_text=f"{type(exc).__name__}: {exc}")
                raise
        finally:
            lock.__exit__(None, None, None)
        failed_list = write_failed_files(cache.logs, job_id, result.failed) if result.failed else None
        rp = result.recovery_point
        history.finish(job_id, rp.status, files=rp.stats.files, nbytes=rp.stats.bytes_scanned,
                       warnings=len(result.failed), recovery_point=rp.rp_id,
                       failed_list=str(failed_list) if failed_list else None)
        history.report(vault, machine_id)
    return BackupOutcome(job_id, rp.status, result, failed_list)


def _engine_run(vault: VaultClient, machine_id: MachineId, keys: MachineKeys, cache: CacheFolder,
                request: BackupRequest, events: EventSink, skip_dirs: list[str], hostname: str,
                job_id: str) -> BackupResult:
    store, damage = ChecksumStore.open_or_reset(cache.checksum_store, keys.key_id)
    try:
        if damage:
            events(Notice("SalChecksumStoreInitializationFailed",
                          f"the checksum store was damaged ({damage}) and was set aside"))
        previous = vault.recovery_points(machine_id)
        engine = BackupEngine(vault, machine_id, keys, store, events, request.excludes, skip_dirs, hostname=hostname,
                              workers=content_workers())
        return engine.run(request.paths, previous[-1] if previous else None, job_id=job_id,
                          keep_until_ns=request.keep_until_ns)
    finally:
        store.close()
