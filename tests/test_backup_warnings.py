"""Items that cannot be read are skipped and listed; the job completes with warnings and loses nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.agent.backup import PACK_TARGET, BackupEngine
from safehold.agent.checksums import ChecksumStore
from safehold.agent.events import Event, ItemFailed, Progress
from safehold.agent.home import AgentHome, CacheFolder
from safehold.agent.joblock import JobLock
from safehold.agent.registration import open_keys, register
from safehold.model import JobStatus, MachineId
from safehold.vault.service import VaultService

from conftest import PASSPHRASE, Cli, restored

# Run the agent as root without the capabilities that let root read anything (CAP_DAC_*).
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")


def _failed_list(cli: Cli) -> list[list[str]]:
    reg = json.loads((cli.home / "registration.json").read_text())
    logs = sorted((Path(reg["cache_folder"]) / "logs").glob("FailedFiles-*.txt"))
    assert logs, "no failed-file list was written"
    return [line.split("\t") for line in logs[-1].read_text().splitlines()]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop capabilities")
def test_access_denied_is_listed_and_the_rest_kept(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "closed").mkdir(parents=True)
    (src / "closed" / "inside").write_text("hidden")
    (src / "ok.txt").write_text("fine")
    (src / "secret.txt").write_text("secret")
    (src / "secret.txt").chmod(0)
    (src / "closed").chmod(0)
    src.chmod(0o755)
    tmp_path.chmod(0o755)
    r = registered("backup", src, "--json", prefix=NO_DAC)
    assert r.code == 3, r.err
    events = r.json_lines()
    summary = events[-1]
    assert summary["status"] == "CompletedWithWarnings" and summary["failed_files"] == 2
    failed = {e["path"]: e["id"] for e in events if e["event"] == "item_failed"}
    assert failed == {f"{src}/secret.txt": "0x80070005", f"{src}/closed": "0x80070005"}
    rows = _failed_list(registered)
    assert {(row[0], row[1]) for row in rows} == set(failed.items())
    assert all(row[4] for row in rows), "every line names a recommended action"
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)
    assert (restored(target, src) / "ok.txt").read_text() == "fine"
    assert not (restored(target, src) / "secret.txt").exists()


def _engine(tmp_path: Path, sink) -> tuple[BackupEngine, ChecksumStore]:  # type: ignore[no-untyped-def]
    svc = VaultService.init_folder(tmp_path / "vault")
    creds = tmp_path / "c.vaultcredentials"
    creds.write_bytes(svc.issue_credentials().encode())
    reg = register(AgentHome(tmp_path / "agent"), creds, PASSPHRASE, lambda c, t: svc)
    keys = open_keys(reg, PASSPHRASE)
    store = ChecksumStore(CacheFolder(Path(reg.cache_folder)).checksum_store, keys.key_id)
    return BackupEngine(svc, MachineId(reg.machine_id), keys, store, sink), store


def test_file_vanishing_during_the_walk_is_listed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in "abc":
        (src / name).write_text(name)
    seen: list[Event] = []

    def sink(event: Event) -> None:
        seen.append(event)
        if isinstance(event, Progress) and (src / "b").exists():
            (src / "b").unlink()  # gone after the folder was listed, before it was read

    engine, store = _engine(tmp_path, sink)
    result = engine.run([str(src)])
    store.close()
    assert result.status == JobStatus.WARNINGS
    assert [(f.path, f.code) for f in result.failed] == [(os.fsencode(src / "b"), "FileNotFound")]
    assert any(isinstance(e, ItemFailed) for e in seen)
    assert result.recovery_point.stats.files == 2


def test_file_changing_while_read_is_listed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    busy = src / "busy.log"
    busy.write_bytes(os.urandom(24 * 1024 * 1024))
    (src / "calm.txt").write_text("calm")
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         f"f = open({str(busy)!r}, 'ab', buffering=0)\n"
         "f.write(b'x'); print('started', flush=True)\n"
         "while True:\n    f.write(b'y' * 512); time.sleep(0.0005)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "started"
        engine, store = _engine(tmp_path, lambda e: None)
        result = engine.run([str(src)])
        store.close()
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    assert [(f.path, f.code) for f in result.failed] == [(os.fsencode(busy), "FileChangedWhileRead")]
    assert result.status == JobStatus.WARNINGS
    assert result.recovery_point.stats.files == 1


def test_second_job_is_refused(registered: Cli, tmp_path: Path) -> None:
    reg = json.loads((registered.home / "registration.json").read_text())
    src = tmp_path / "src"
    src.mkdir()
    with JobLock(CacheFolder(Path(reg["cache_folder"])).lock_file, "backup"):
        r = registered("backup", src)
    assert r.code == 4 and "34528" in r.err
    registered.ok("backup", src)


@pytest.mark.parametrize("damage", ["corrupt", "lost"])
def test_damaged_checksum_store_is_rebuilt_from_last_recovery_point(registered: Cli, tmp_path: Path,
                                                                     damage: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(2_000_000))
    (src / "small").write_text("s")
    registered.ok("backup", src)
    reg = json.loads((registered.home / "registration.json").read_text())
    store = CacheFolder(Path(reg["cache_folder"])).checksum_store
    assert store.stat().st_mode & 0o077 == 0, "the checksum store lists every path: owner only"
    for extra in ("-wal", "-shm"):
        Path(str(store) + extra).unlink(missing_ok=True)
    if damage == "corrupt":
        store.write_bytes(b"this is not a database" * 100)
    else:
        store.unlink()
    r = registered.ok("backup", src, "--json")
    notices = [e for e in r.json_lines() if e["event"] == "notice"]
    assert any(n["code"] == "SalChecksumStoreInitializationFailed" for n in notices), r.out
    assert r.summary()["bytes_read"] == 0, "unchanged files must not be read again after the rebuild"


def test_interrupted_backup_resumes_without_resending(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 3 * 20 * 1024 * 1024
    for i in range(3):
        (src / f"big{i}.bin").write_bytes(os.urandom(size // 3))

    class Stop(Exception):
        pass

    engine, store = _engine(tmp_path, lambda e: None)
    vault = engine.vault
    real_put = vault.put_pack

    def put_then_stop(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_put(*args, **kwargs)  # the pack is stored and indexed, then the connection "drops"
        raise Stop

    engine.vault.put_pack = put_then_stop  # type: ignore[method-assign]
    with pytest.raises(Stop):
        engine.run([str(src)])
    store.close()
    vault.put_pack = real_put  # type: ignore[method-assign]
    assert vault.recovery_points(engine.machine_id) == []
    kept = sum(n for _, n in vault.packs(engine.machine_id))
    assert kept >= PACK_TARGET, "the interrupted run kept its uploaded pack"

    again = BackupEngine(vault, engine.machine_id, engine.keys, ChecksumStore(store.path, engine.keys.key_id),
                         lambda e: None)
    result = again.run([str(src)])
    assert result.status == JobStatus.COMPLETED
    # random data does not compress: everything not in the kept pack is sent once, nothing more
    assert again.counters.bytes_new_stored <= size - kept + 1024 * 1024
    assert sum(n for _, n in vault.packs(engine.machine_id)) <= size + 2 * 1024 * 1024


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="the kernel offers no FUSE here")
def test_unreadable_and_offline_files_from_a_failing_file_system(registered: Cli, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fs = subprocess.Popen([sys.executable, str(Path(__file__).with_name("faultfs.py")), str(mnt)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert fs.stdout is not None and fs.stdout.readline().strip() == "ready"
        r = registered("backup", mnt, "--json")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)])
        fs.wait(timeout=30)
        if fs.stdout is not None:
            fs.stdout.close()
    assert r.code == 3, r.err
    failed = {e["path"]: e["id"] for e in r.json_lines() if e["event"] == "item_failed"}
    assert failed == {f"{mnt}/broken.bin": "0x80070570", f"{mnt}/offline.doc": "0x8007018B"}
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)
    assert (restored(target, mnt) / "good.txt").read_text() == "all good\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_kernel_file_systems_are_kept_as_empty_mount_points(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "proc").mkdir(parents=True)
    (src / "sys").mkdir()
    (src / "data.txt").write_text("data")
    subprocess.run(["mount", "-t", "proc", "proc", str(src / "proc")], check=True)
    try:
        subprocess.run(["mount", "-t", "sysfs", "sysfs", str(src / "sys")], check=True)
        try:
            s = registered.ok("backup", src, "--json").summary()
        finally:
            subprocess.run(["umount", str(src / "sys")], check=True)
    finally:
        subprocess.run(["umount", str(src / "proc")], check=True)
    assert s["status"] == "Completed" and s["files"] == 1, s
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)
    out = restored(target, src)
    assert (out / "data.txt").read_text() == "data"
    assert os.listdir(out / "proc") == [] and os.listdir(out / "sys") == []
