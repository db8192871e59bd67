"""The faithful round trip: back up a tree full of hard cases through the CLI, restore it, compare everything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import Cli
from conftest import restored as _restored
from fidelity import build_tree, diff_snapshots, snapshot


@pytest.mark.parametrize("workers", ["0", "2"])
def test_round_trip_keeps_everything(registered: Cli, tmp_path: Path, workers: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways small files are read: by the walk itself, and by content worker processes."""
    monkeypatch.setenv("SAFEHOLD_BACKUP_WORKERS", workers)
    src = tmp_path / "src"
    src.mkdir()
    build_tree(src)
    before = snapshot(src)
    registered.ok("backup", src)
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)
    after = snapshot(_restored(target, src))
    assert diff_snapshots(before, after) == []
    # the folder itself keeps its metadata too
    assert os.lstat(src).st_mtime_ns == os.lstat(_restored(target, src)).st_mtime_ns


def test_second_backup_reads_nothing_unchanged_and_restores_same(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    build_tree(src)
    first = registered.ok("backup", src, "--json").json_lines()[-1]
    second = registered.ok("backup", src, "--json").json_lines()[-1]
    assert first["bytes_read"] > 0
    assert second["bytes_read"] == 0 and second["bytes_new_stored"] == 0
    target = tmp_path / "restore"
    registered.ok("restore", second["recovery_point"], "--target", target)
    assert diff_snapshots(snapshot(src), snapshot(_restored(target, src))) == []


def test_partial_restore(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "keep" / "deep").mkdir(parents=True)
    (src / "keep" / "deep" / "a.txt").write_text("a")
    (src / "skip").mkdir()
    (src / "skip" / "b.txt").write_text("b")
    registered.ok("backup", src)
    target = tmp_path / "restore"
    registered.ok("restore", "latest", str(src / "keep"), "--target", target)
    out = _restored(target, src)
    assert (out / "keep" / "deep" / "a.txt").read_text() == "a"
    assert not (out / "skip").exists()
    r = registered("restore", "latest", str(src / "nope"), "--target", tmp_path / "other", "--json")
    assert r.code == 3
    assert [e["code"] for e in r.json_lines() if e["event"] == "item_failed"] == ["PathNotInRecoveryPoint"]


def test_exclude_patterns(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "cache").mkdir(parents=True)
    (src / "cache" / "big.bin").write_bytes(b"x" * 1000)
    (src / "a.tmp").write_text("tmp")
    (src / "a.txt").write_text("txt")
    registered.ok("backup", src, "--exclude", "*.tmp", "--exclude", f"{src}/cache")
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)
    out = _restored(target, src)
    assert sorted(os.listdir(out)) == ["a.txt"]


def test_keeps_what_tar_and_rsync_lose(registered: Cli, tmp_path: Path) -> None:
    """GNU tar and rsync -aHAXS are the bar: whatever they lose on this tree, safehold keeps."""
    import shutil

    import pytest

    from fidelity import peer_losses

    if not (shutil.which("tar") and shutil.which("rsync")):
        pytest.skip("tar and rsync are installed by scripts/apt.sh")
    src = tmp_path / "src"
    src.mkdir()
    build_tree(src)
    losses = peer_losses(src)
    assert any(losses.values()), "the tree no longer has anything the peers lose; make it harder"
    registered.ok("backup", src)
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)

    assert diff_snapshots(snapshot(src), snapshot(_restored(target, src))) == []


def test_target_below_a_symlinked_folder(registered: Cli, tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "f.txt").write_text("via a link")
    (tmp_path / "link").symlink_to(real)
    registered.ok("backup", tmp_path / "link" / "sub")
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)
    assert (_restored(target, real) / "sub" / "f.txt").read_text() == "via a link"


def test_file_with_the_bytes_of_an_empty_folder_listing(registered: Cli, tmp_path: Path) -> None:
    from safehold.formats import tree

    src = tmp_path / "src"
    (src / "zdir").mkdir(parents=True)
    (src / "a.bin").write_bytes(tree.encode([]))
    registered.ok("backup", src)
    registered.ok("check", "--read-data")
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)
    assert diff_snapshots(snapshot(src), snapshot(_restored(target, src))) == []


def test_very_deep_tree(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):  # far deeper than PATH_MAX allows by name, and than Python's default recursion
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    with os.fdopen(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
        f.write("deep")
    os.close(fd)
    registered.ok("backup", src)
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)

    def levels(root: Path) -> tuple[int, bytes, list[int]]:
        fd, depth, mtimes = os.open(root, os.O_RDONLY | os.O_DIRECTORY), 0, []
        while "d" in os.listdir(fd):
            mtimes.append(os.stat("d", dir_fd=fd, follow_symlinks=False).st_mtime_ns)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, depth = nxt, depth + 1
        with os.fdopen(os.open("bottom.txt", os.O_RDONLY, dir_fd=fd), "rb") as f:
            data = f.read()
        os.close(fd)
        return depth, data, mtimes

    try:
        assert levels(_restored(target, src)) == levels(src)
    finally:  # pytest's own clean-up recurses per level; take the chains down from the bottom
        for root in (src, _restored(target, src)):
            subprocess.run(["rm", "-rf", str(root)], check=True)


def test_xattrs_of_unchanged_files_come_from_the_checksum_store_and_changes_are_seen(
        registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    f = src / "tagged"
    f.write_text("content")
    os.setxattr(f, "user.colour", b"blue")
    registered.ok("backup", src)
    # unchanged: size, mtime, ctime and inode match, so the recorded xattrs are used without reading them
    unchanged = registered.ok("backup", src, "--json").json_lines()[-1]
    assert unchanged["bytes_read"] == 0
    os.setxattr(f, "user.colour", b"green")  # changes the ctime, not the mtime
    changed = registered.ok("backup", src, "--json").json_lines()[-1]
    again = registered.ok("backup", src, "--json").json_lines()[-1]
    for point, colour in ((unchanged, b"blue"), (changed, b"green"), (again, b"green")):
        target = tmp_path / f"restore-{point['recovery_point']}"
        registered.ok("restore", point["recovery_point"], "--target", target)
        assert os.getxattr(_restored(target, src) / "tagged", "user.colour") == colour
