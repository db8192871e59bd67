"""A backup of a tree that changes while it is read: every file comes back exactly as it was at one moment,
or is listed as changed while read (700401); nothing else is lost.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from safehold.agent import workers
from safehold.agent.backup import BackupEngine
from safehold.agent.checksums import ChecksumStore
from safehold.agent.home import AgentHome, CacheFolder
from safehold.agent.reader import ChunkReader
from safehold.agent.registration import open_keys, register
from safehold.agent.restore import RestoreEngine
from safehold.errors import spec
from safehold.formats.chunks import Sealer
from safehold.model import MachineId
from safehold.vault.service import VaultService

from conftest import PASSPHRASE, restored


class Writer(threading.Thread):
    """Appends to and rewrites files in place until told to stop, remembering every content each file had.

    Every change makes a file longer than it ever was (a rewrite truncates it to nothing first), so a read
    that overlaps a change always sees a size that moved: that is what the backup detects.
    """

    def __init__(self, files: list[Path]) -> None:
        super().__init__(daemon=True)
        self.files = files
        self.states = {p: {hashlib.sha256(p.read_bytes()).digest()} for p in files}
        self.stop = threading.Event()
        self.changes = 0
        self.rng = random.Random(5)

    def run(self) -> None:
        while not self.stop.is_set():
            p = self.rng.choice(self.files)
            data = p.read_bytes()
            if self.rng.random() < 0.5:
                extra = b"appended %d\n" % self.changes
                with open(p, "ab") as f:
                    f.write(extra)
                data += extra
            else:
                data = (b"rewritten %d\n" % self.changes) * (len(data) // 12 + 2)
                self.states[p].add(hashlib.sha256(b"").digest())  # between the truncation and the write
                with open(p, "wb") as f:
                    f.write(data)
            self.states[p].add(hashlib.sha256(data).digest())
            self.changes += 1


@pytest.mark.parametrize("workers", [0, 2])
def test_files_changing_during_backup_are_kept_whole_or_listed(tmp_path: Path, workers: int) -> None:
    src = tmp_path / "src"
    rng = random.Random(1)
    busy: list[Path] = []
    calm: dict[Path, bytes] = {}
    for d in range(6):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(120):
            p = src / f"d{d}" / f"f{i}.txt"
            p.write_bytes(b"file %d %d\n" % (d, i) * rng.randint(1, 400))
            if i % 3 == 0:
                busy.append(p)
            else:
                calm[p] = p.read_bytes()
    for i in range(4):  # several chunks each, so a change can fall between two chunk reads
        p = src / f"big{i}.bin"
        p.write_bytes(rng.randbytes(3 * 1024 * 1024))
        busy.append(p)

    svc = VaultService.init_folder(tmp_path / "vault")
    creds = tmp_path / "c.vaultcredentials"
    creds.write_bytes(svc.issue_credentials().encode())
    reg = register(AgentHome(tmp_path / "agent"), creds, PASSPHRASE, lambda c, t: svc)
    keys = open_keys(reg, PASSPHRASE)
    machine = MachineId(reg.machine_id)
    store = ChecksumStore(CacheFolder(Path(reg.cache_folder)).checksum_store, keys.key_id)

    writer = Writer(busy)
    writer.start()
    deadline = time.monotonic() + 60
    while writer.changes < 50:  # the tree is already changing when the backup starts
        assert time.monotonic() < deadline, "the writer made no progress"
    try:
        result = BackupEngine(svc, machine, keys, store, lambda e: None, workers=workers).run([str(src)])
    finally:
        during = writer.changes
        writer.stop.set()
        writer.join(timeout=60)
    store.close()
    assert during > 100, "the files must have changed while the backup ran"

    listed = {Path(os.fsdecode(f.path)) for f in result.failed}
    assert {f.code for f in result.failed} <= {"FileChangedWhileRead"}
    assert {spec(f.code).id for f in result.failed} <= {700401}
    assert listed <= set(busy), "only files that changed are listed"

    target = tmp_path / "restore"
    out = RestoreEngine(ChunkReader(svc, machine, Sealer(keys)), lambda e: None).run(
        result.recovery_point, str(target))
    assert out.failed == []
    back = restored(target, src)
    for p, content in calm.items():
        assert (back / p.relative_to(src)).read_bytes() == content, p
    for p in busy:
        q = back / p.relative_to(src)
        if p in listed:
            assert not q.exists(), f"{p} is listed as changed and must not be restored half-read"
        else:
            assert q.exists(), f"{p} was neither restored nor listed"
            assert hashlib.sha256(q.read_bytes()).digest() in writer.states[p], f"{p} restored torn"


def test_a_worker_that_dies_fails_the_job_and_makes_no_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(100):
            (src / f"d{d}" / f"f{i}").write_bytes(b"%d %d\n" % (d, i) * 50)
    svc = VaultService.init_folder(tmp_path / "vault")
    creds = tmp_path / "c.vaultcredentials"
    creds.write_bytes(svc.issue_credentials().encode())
    reg = register(AgentHome(tmp_path / "agent"), creds, PASSPHRASE, lambda c, t: svc)
    keys = open_keys(reg, PASSPHRASE)
    machine = MachineId(reg.machine_id)
    store = ChecksumStore(CacheFolder(Path(reg.cache_folder)).checksum_store, keys.key_id)

    started = workers.ContentPool.__init__

    def start_then_kill_one(self: workers.ContentPool, *args: object) -> None:
        started(self, *args)  # type: ignore[arg-type]
        os.kill(self._pids[0], signal.SIGKILL)

    monkeypatch.setattr(workers.ContentPool, "__init__", start_then_kill_one)
    engine = BackupEngine(svc, machine, keys, store, lambda e: None, workers=2)
    with pytest.raises(RuntimeError, match="worker process ended"):
        engine.run([str(src)])
    store.close()
    assert svc.recovery_points(machine) == []
    assert engine.failed == []  # no file is blamed for it


@pytest.mark.parametrize("change", ["none", "grown", "shortened"])
def test_a_small_file_read_is_checked_against_its_size(tmp_path: Path, change: str) -> None:
    """A small file is read in one call of a byte more than its size: a file that grew or shrank since it was
    looked at is refused, never cut to the old size or padded."""
    from safehold.agent.fileread import ChangedWhileRead, read_small

    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    st = os.stat(path)
    if change == "grown":
        path.write_bytes(b"x" * 1001)
    elif change == "shortened":
        path.write_bytes(b"x" * 999)
    fd = os.open(path, os.O_RDONLY)
    try:
        if change == "none":
            assert bytes(read_small(fd, st, None)) == b"x" * 1000
        else:
            with pytest.raises(ChangedWhileRead, match="grew" if change == "grown" else "shorter"):
                read_small(fd, st, None)
    finally:
        os.close(fd)
