"""The agent's job history: every backup, restore and refused start, with its times, status and figures.

A SQLite file in the cache folder (0600). A job whose process died while it ran is marked failed with the
reason the next time anyone reads the history; `stop` asks a running job's process to cancel (SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from safehold.agent.joblock import JobLock
from safehold.errors import SafeholdError, raise_error
from safehold.model import JobRecord, JobStatus, MachineId
from safehold.ports import VaultClient

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,            -- backup | restore | ...
    trigger TEXT NOT NULL,         -- manual | scheduled
    started_ns INTEGER NOT NULL,
    ended_ns INTEGER,
    status TEXT NOT NULL,
    pid INTEGER,
    pid_start TEXT,                -- the process's start time, so a reused pid is not taken for the job's
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    warnings INTEGER NOT NULL DEFAULT 0,
    recovery_point TEXT,
    error_id TEXT,
    error_text TEXT,
    failed_list TEXT,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_started ON jobs (started_ns);
"""
COLUMNS = ("job_id", "kind", "trigger", "started_ns", "ended_ns", "status", "pid", "pid_start", "files", "bytes",
           "warnings", "recovery_point", "error_id", "error_text", "failed_list", "reported")
DIED = "the job's process (pid {pid}) ended without finishing the job"
MAX_ERROR_TEXT = 2000  # what the vault keeps of an error text
REPORT_BATCH = 500


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    trigger: str
    started_ns: int
    ended_ns: int | None
    status: JobStatus
    pid: int | None
    pid_start: str | None
    files: int
    bytes: int
    warnings: int
    recovery_point: str | None
    error_id: str | None
    error_text: str | None
    failed_list: str | None
    reported: bool

    @property
    def running(self) -> bool:
        return self.status == JobStatus.RUNNING

    def record(self) -> JobRecord:
        return JobRecord(job_id=self.job_id, kind=self.kind, trigger=self.trigger, started_ns=self.started_ns,
                         ended_ns=self.ended_ns, status=self.status, files=self.files, bytes=self.bytes,
                         warnings=self.warnings, recovery_point=self.recovery_point, error_id=self.error_id,
                         error_text=self.error_text)

    def as_dict(self) -> dict[str, object]:
        return {"job_id": self.job_id, "kind": self.kind, "trigger": self.trigger, "started_ns": self.started_ns,
                "ended_ns": self.ended_ns, "status": str(self.status), "pid": self.pid, "files": self.files,
                "bytes": self.bytes, "warnings": self.warnings, "recovery_point": self.recovery_point,
                "error_id": self.error_id, "error": self.error_text, "failed_files_list": self.failed_list}


def process_start(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()[19].decode()


def _alive(pid: int, start: str | None) -> bool:
    """The job's own process still runs: same pid and, where /proc tells, the same start time."""
    if start is not None:
        return process_start(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _row(r: tuple[object, ...]) -> Job:
    d = dict(zip(COLUMNS, r, strict=True))
    d["status"] = JobStatus(str(d["status"]))
    d["reported"] = bool(d["reported"])
    return Job(**d)  # type: ignore[arg-type]


class JobHistory:
    def __init__(self, path: Path, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self._now = clock_ns
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        try:
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise_error("SalVhdInitializationError", detail=f"{path}: {exc}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> JobHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> int:
        return self._now()

    # ---- writing ------------------------------------------------------------------------------------------

    def start(self, kind: str, trigger: str = "manual", job_id: str | None = None, pid: int | None = None) -> str:
        job_id = job_id or uuid.uuid4().hex
        pid = os.getpid() if pid is None else pid
        self.db.execute("INSERT INTO jobs (job_id, kind, trigger, started_ns, status, pid, pid_start) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (job_id, kind, trigger, self.now(), str(JobStatus.RUNNING), pid, process_start(pid)))
        return job_id

    def finish(self, job_id: str, status: JobStatus, files: int = 0, nbytes: int = 0, warnings: int = 0,
               recovery_point: str | None = None, error_id: str | None = None, error_text: str | None = None,
               failed_list: str | None = None, only_running: bool = False) -> None:
        """Record a job's end. `only_running`: unless its own process recorded an end meanwhile (reaping)."""
        self.db.execute("UPDATE jobs SET ended_ns = ?, status = ?, files = ?, bytes = ?, warnings = ?, "
                        "recovery_point = ?, error_id = ?, error_text = ?, failed_list = ?, reported = 0 "
                        "WHERE job_id = ? AND (? = 0 OR status = ?)",
                        (self.now(), str(status), files, nbytes, warnings, recovery_point, error_id,
                         (error_text or "")[:MAX_ERROR_TEXT] or None, failed_list, job_id, int(only_running),
                         str(JobStatus.RUNNING)))

    def lock(self, lock_file: Path, kind: str, trigger: str, job: str) -> JobLock:
        """The machine's job lock for a new job, taken; a refused start is recorded as a failed job, then raised."""
        try:
            return JobLock(lock_file, job).__enter__()
        except SafeholdError as exc:
            self.refused(kind, trigger, exc.spec.id_text, exc.text)
            raise

    def refused(self, kind: str, trigger: str, error_id: str, error_text: str) -> str:
        """A job that never started (another job held the machine): kept so the history shows the missed run."""
        job_id = self.start(kind, trigger)
        self.finish(job_id, JobStatus.FAILED, error_id=error_id, error_text=error_text)
        return job_id

    def mark_reported(self, job_ids: list[str]) -> None:
        self.db.executemany("UPDATE jobs SET reported = 1 WHERE job_id = ?", [(j,) for j in job_ids])

    # ---- reading ------------------------------------------------------------------------------------------

    def reap(self) -> list[Job]:
        """Mark running jobs whose process is gone as failed, with the reason; returns them."""
        dead = []
        for job in self._select("WHERE status = ?", (str(JobStatus.RUNNING),)):
            if job.pid is not None and _alive(job.pid, job.pid_start):
                continue
            self.finish(job.job_id, JobStatus.FAILED, job.files, job.bytes, job.warnings, job.recovery_point,
                        error_id="700003", error_text=DIED.format(pid=job.pid), only_running=True)
            dead.append(job)
        return dead

    def recent(self, limit: int = 50, kind: str | None = None) -> list[Job]:
        self.reap()
        where, args = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        rows = list(self._select(f"{where} ORDER BY started_ns DESC, rowid DESC LIMIT ?", (*args, limit)))
        return rows[::-1]

    def unreported(self) -> list[Job]:
        return list(self._select("WHERE reported = 0 AND status != ? ORDER BY started_ns",
                                 (str(JobStatus.RUNNING),)))

    def get(self, ref: str) -> Job:
        """A job by id or unique id prefix (at least 4 characters), or `last`."""
        self.reap()
        if ref == "last":
            jobs = list(self._select("ORDER BY started_ns DESC, rowid DESC LIMIT 1", ()))
        elif len(ref) >= 4:
            jobs = list(self._select("WHERE job_id LIKE ? LIMIT 2", (ref.lower().replace("%", "") + "%",)))
        else:
            jobs = []
        if len(jobs) != 1:
            raise_error("JobNotFound", job=ref, detail="the prefix matches several" if len(jobs) > 1 else None)
        return jobs[0]

    def _select(self, tail: str, args: tuple[object, ...]) -> Iterator[Job]:
        for r in self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs {tail}", args):  # noqa: S608
            yield _row(r)

    def report(self, vault: VaultClient, machine_id: MachineId) -> int:
        """Send the vault the jobs it has not seen, in batches; returns how many it took. A vault that cannot
        be reached now gets them with the next job's report, so a failure here never fails a job; a job the
        vault refuses is set aside, so it never blocks the ones after it."""
        self.reap()
        pending = self.unreported()
        sent = 0
        for i in range(0, len(pending), REPORT_BATCH):
            batch = pending[i:i + REPORT_BATCH]
            try:
                vault.report_jobs(machine_id, [j.record() for j in batch])
            except SafeholdError as exc:
                if exc.spec.code != "InvalidArgument":
                    return sent
                for j in batch:  # the vault refused something in the batch: find it, job by job
                    try:
                        vault.report_jobs(machine_id, [j.record()])
                    except SafeholdError as one:
                        if one.spec.code != "InvalidArgument":
                            return sent
                    self.mark_reported([j.job_id])
                    sent += 1
                continue
            except OSError:
                return sent
            self.mark_reported([j.job_id for j in batch])
            sent += len(batch)
        return sent

    # ---- control ------------------------------------------------------------------------------------------

    def stop(self, ref: str) -> Job:
        """Ask a running job's process to cancel; returns the job as it was. Not running: InvalidArgument."""
        job = self.get(ref)
        if not job.running or job.pid is None:
            raise_error("InvalidArgument", what=f"job {job.job_id[:8]} is not running ({job.status})")
        try:
            os.kill(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise_error("InvalidArgument", what=f"job {job.job_id[:8]} runs as another user; stop it as that user "
                                                "or as root")
        return job
