"""Folders taken whole from the checksum store's records: an unchanged folder gives the same tree without a
look at its files' rows, and every change a user can make to an item inside it is still seen."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import msgspec
import pytest

from safehold.model import ChunkId, MachineId
from safehold.vault.service import VaultService

from conftest import Cli, restored
from fidelity import diff_snapshots, snapshot

NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")


def _registration(cli: Cli) -> dict:
    reg: dict = json.loads((cli.home / "registration.json").read_text())
    return reg


def _store(cli: Cli) -> Path:
    return Path(_registration(cli)["cache_folder"]) / "checksums.sqlite"


def _records(cli: Cli) -> set[bytes]:
    with sqlite3.connect(_store(cli)) as db:
        return {bytes(r[0]) for r in db.execute("SELECT dir FROM trees")}


def _rows(cli: Cli) -> set[tuple[bytes, bytes]]:
    """(folder, name) of every file row in the checksum store."""
    with sqlite3.connect(_store(cli)) as db:
        return {(bytes(r[0]), bytes(r[1])) for r in db.execute("SELECT dir, name FROM files")}


def _roots(tmp_path: Path, cli: Cli) -> list[bytes]:
    svc = VaultService.open_folder(tmp_path / "vault")
    try:
        return [rp.root for rp in svc.recovery_points(MachineId(_registration(cli)["machine_id"]))]
    finally:
        svc.close()


def _tree(tmp_path: Path) -> Path:
    """A source folder in `tmp_path` with a bit of everything, in folders of its own; returns it."""
    src = tmp_path / "src"
    for d in ("a/deep/er", "b", "c", "d", "e"):
        (src / d).mkdir(parents=True)
    for i in range(5):
        (src / "a" / f"f{i}.txt").write_text(f"file {i}\n" * (i + 1))
        (src / "a" / "deep" / "er" / f"g{i}").write_bytes(os.urandom(300 + i))
    (src / "b" / "big.bin").write_bytes(os.urandom(600_000))  # read by the backup thread, not a worker
    (src / "b" / "link").symlink_to("big.bin")
    (src / "d" / "same-size.txt").write_text("version one\n")
    (src / "e" / "x.txt").write_text("x\n")
    (src / "c" / "empty").write_bytes(b"")
    os.mkfifo(src / "c" / "pipe")
    (src / "top.txt").write_text("top\n")
    return src


def _backup(cli: Cli, src: Path) -> dict:
    summary: dict = cli.ok("backup", src, "--json").summary()
    return summary


def _restores_as_source(cli: Cli, tmp_path: Path, src: Path, rp: str, name: str) -> None:
    target = tmp_path / name
    cli.ok("restore", rp, "--target", target)
    assert diff_snapshots(snapshot(src), snapshot(restored(target, src))) == []


def test_unchanged_folders_are_taken_from_their_records(registered: Cli, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    first = _backup(registered, src)
    folders = {bytes(src) + p for p in (b"", b"/a", b"/a/deep", b"/a/deep/er", b"/b", b"/c", b"/d", b"/e")}
    assert folders <= _records(registered), "every folder walked without trouble gets a record"
    second = _backup(registered, src)
    assert second["bytes_read"] == 0 and second["files"] == first["files"] and second["dirs"] == first["dirs"]
    roots = _roots(tmp_path, registered)
    assert roots[0] == roots[1], "an unchanged tree gives the same root"
    _restores_as_source(registered, tmp_path, src, second["recovery_point"], "r1")


def test_every_kind_of_change_inside_a_recorded_folder_is_seen(registered: Cli, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    _backup(registered, src)
    _backup(registered, src)  # taken from the records
    a, b, c = src / "a", src / "b", src / "c"
    # alone in their folders, so that nothing else there tells: content rewritten with the same size and
    # the old mtime put back, and an xattr added; only the ctime changes
    st = os.stat(src / "d" / "same-size.txt")
    (src / "d" / "same-size.txt").write_text("version two\n")
    os.utime(src / "d" / "same-size.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.setxattr(src / "e" / "x.txt", "user.note", b"added later")
    (a / "f1.txt").chmod(0o600)
    os.chown(a / "f3.txt", 1234, 5678)
    (a / "deep" / "er" / "g0").unlink()
    (a / "deep" / "er" / "new").write_text("new deep down\n")
    (src / "moved.txt").write_text("replaces f4\n")
    os.replace(src / "moved.txt", a / "f4.txt")  # another inode under the same name
    (b / "link").unlink()
    (b / "link").symlink_to("elsewhere")
    with open(b / "big.bin", "r+b") as f:  # an edit inside a large file, size kept
        f.seek(300_000)
        f.write(b"edited" * 10)
    (c / "empty").rename(c / "renamed")
    third = _backup(registered, src)
    assert third["bytes_read"] > 0
    fourth = _backup(registered, src)  # before the restore: that changes the folders above src
    assert fourth["bytes_read"] == 0
    roots = _roots(tmp_path, registered)
    assert roots[2] != roots[1] and roots[3] == roots[2]
    _restores_as_source(registered, tmp_path, src, third["recovery_point"], "r2")


def test_a_chunk_gone_from_the_vault_makes_its_folder_read_again(registered: Cli, tmp_path: Path) -> None:
    src = _tree(tmp_path)
    _backup(registered, src)
    gone = _tree_chunks(registered, src / "a" / "deep" / "er", b"g3")
    svc = VaultService.open_folder(tmp_path / "vault")
    try:
        assert svc.forget_chunks(MachineId(_registration(registered)["machine_id"]), [ChunkId(c) for c in gone]) == 1
    finally:
        svc.close()
    second = _backup(registered, src)
    assert second["bytes_read"] == 303, "only the file whose chunk is gone is read again"
    _restores_as_source(registered, tmp_path, src, second["recovery_point"], "r")


def _epochs(cli: Cli) -> set[int | None]:
    with sqlite3.connect(_store(cli)) as db:
        return {r[0] for r in db.execute("SELECT epoch FROM trees")}


def test_records_carry_the_vault_chunk_epoch_they_were_checked_at(registered: Cli, tmp_path: Path) -> None:
    """A record is taken on trust only at the chunk epoch it carries; a record checked at a newer epoch is
    stamped with it, and a store of schema 3 (records without an epoch) keeps its rows and is checked once."""
    src = _tree(tmp_path)
    _backup(registered, src)
    assert _epochs(registered) == {0}
    svc = VaultService.open_folder(tmp_path / "vault")
    mid = MachineId(_registration(registered)["machine_id"])
    try:
        assert svc.forget_chunks(mid, [ChunkId(c) for c in _tree_chunks(registered, src / "a", b"f2.txt")]) == 1
        assert svc.chunk_epoch(mid) == 1
    finally:
        svc.close()
    second = _backup(registered, src)
    assert second["bytes_read"] == len("file 2\n" * 3)
    assert _epochs(registered) == {1}, "checked records and rewritten ones carry the new epoch"
    with sqlite3.connect(_store(registered)) as db:  # as an older agent left it
        db.execute("ALTER TABLE trees DROP COLUMN epoch")
        db.execute("UPDATE meta SET v = '3' WHERE k = 'schema'")
    records = _records(registered)
    third = _backup(registered, src)
    assert third["bytes_read"] == 0 and _records(registered) == records
    assert _epochs(registered) == {1}
    _restores_as_source(registered, tmp_path, src, third["recovery_point"], "r")


def test_a_changed_folder_keeps_the_recorded_entries_of_its_unchanged_items(registered: Cli,
                                                                             tmp_path: Path) -> None:
    """In a folder where one file changed, the others keep their recorded entries without their rows being
    read; a recorded entry whose chunk the vault lost is not kept (its file is read again)."""
    src = tmp_path / "src"
    many = src / "many"
    many.mkdir(parents=True)
    for i in range(40):
        (many / f"f{i:02}").write_bytes(os.urandom(100 + i))
    (many / "link").symlink_to("f00")
    _backup(registered, src)
    assert _rows(registered) == set(), "files read in a recorded folder are kept by its record alone"
    (many / "f03").write_bytes(b"changed")
    second = _backup(registered, src)
    assert second["bytes_read"] == len(b"changed")
    svc = VaultService.open_folder(tmp_path / "vault")
    try:
        (raw,) = _tree_chunks(registered, many, b"f05")
        assert svc.forget_chunks(MachineId(_registration(registered)["machine_id"]), [ChunkId(raw)]) == 1
    finally:
        svc.close()
    (many / "f03").write_bytes(b"changed again")
    third = _backup(registered, src)
    assert third["bytes_read"] == len(b"changed again") + 105, "f05's chunk is gone: it is read again"
    fourth = _backup(registered, src)
    assert fourth["bytes_read"] == 0
    roots = _roots(tmp_path, registered)
    assert roots[3] == roots[2] != roots[1]
    _restores_as_source(registered, tmp_path, src, fourth["recovery_point"], "r")


def _tree_chunks(cli: Cli, folder: Path, name: bytes) -> list[bytes]:
    """The chunk ids the folder record of `folder` holds for its item `name`."""
    with sqlite3.connect(_store(cli)) as db:
        (raw,) = db.execute("SELECT tree FROM trees WHERE dir = ?", (bytes(folder),)).fetchone()
    [entry] = [e for e in msgspec.msgpack.decode(raw)["entries"] if e["name"] == name]
    return list(entry["chunks"])


def test_folders_with_hard_links_get_no_record(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "links").mkdir(parents=True)
    (src / "plain").mkdir()
    (src / "links" / "one").write_text("linked\n")
    os.link(src / "links" / "one", src / "links" / "two")
    (src / "plain" / "x").write_text("x\n")
    _backup(registered, src)
    records = _records(registered)
    assert bytes(src / "plain") in records and bytes(src) in records
    assert bytes(src / "links") not in records, "hard-link groups are numbered across folders"
    assert _rows(registered) == {(bytes(src / "links"), b"one")}, "a folder without a record keeps file rows"
    second = _backup(registered, src)
    assert second["bytes_read"] == 0
    _restores_as_source(registered, tmp_path, src, second["recovery_point"], "r")
    target = restored(tmp_path / "r", src) / "links"
    assert os.stat(target / "one").st_ino == os.stat(target / "two").st_ino


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop capabilities")
def test_a_folder_with_an_unreadable_file_is_read_again_next_time(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "locked" / "secret.txt").write_text("secret\n")
    (src / "locked" / "secret.txt").chmod(0)
    (src / "locked" / "open.txt").write_text("open\n")
    src.chmod(0o755)
    tmp_path.chmod(0o755)
    assert registered("backup", src, "--json", prefix=NO_DAC).code == 3
    assert bytes(src / "locked") not in _records(registered), "the failed file would never be tried again"
    assert (bytes(src / "locked"), b"open.txt") in _rows(registered), "the file read keeps its row"
    second = _backup(registered, src)  # with the capability to read it
    _restores_as_source(registered, tmp_path, src, second["recovery_point"], "r")


def test_an_item_whose_device_number_changed_keeps_its_entry() -> None:
    """Device numbers of network and volume-managed file systems can change across reboots; inode, times and
    size still decide."""
    from safehold.agent.backup import _same_item

    was = (b"f", 0o100644, 12, 64768, 5, 1, 2, 0, 0, 0)
    assert _same_item(was, was) and _same_item(was, (b"f", 0o100644, 12, 99, 5, 1, 2, 0, 0, 0))
    assert not _same_item(was, (b"f", 0o100644, 13, 64768, 5, 1, 2, 0, 0, 0)), "another inode"
    assert not _same_item(was, (b"f", 0o100644, 12, 64768, 5, 1, 3, 0, 0, 0)), "another ctime"
