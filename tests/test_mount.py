"""`safehold mount` and `safehold unmount`: recovery points as a real read-only FUSE file system.

Everything here mounts for real (Debian fuse3, mfusepy) and reads through the kernel with ordinary calls.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import Cli, FakeClock
from fidelity import SPARSE_DATA_OFFSETS, SPARSE_SIZE, build_tree, diff_snapshots, snapshot

DEADLINE_S = 30.0


def _mounted_here(path: Path) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return False


def _wait(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextmanager
def mounted(cli: Cli, mnt: Path, *args: str) -> Iterator[dict]:
    """Mount with `safehold mount ARGS MNT --json`; always unmounted afterwards, even when the test fails."""
    r = cli("mount", *args, mnt, "--json")
    assert r.code == 0, f"mount failed: {r.out}\n{r.err}"
    try:
        yield r.summary()
    finally:
        if _mounted_here(mnt) or _dead(mnt):
            cli("unmount", mnt)
        if _mounted_here(mnt) or _dead(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


def _dead(path: Path) -> bool:
    try:
        os.lstat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _backup(cli: Cli, src: Path) -> str:
    return str(cli.ok("backup", src, "--json").summary()["recovery_point"])


def test_mount_shows_every_item_as_it_was_backed_up(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    build_tree(src)
    rp = _backup(registered, src)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(registered, mnt, rp[:8]) as info:
        assert info["recovery_point"] == rp and info["pid"] > 0
        inside = mnt / str(src).lstrip("/")
        want, got = snapshot(src), snapshot(inside)
        # FUSE has no SEEK_DATA/SEEK_HOLE here: a sparse file reads right (zeros in its holes, same digest)
        # but shows as one data region. Everything else must be identical.
        for snap in (want, got):
            for rec in snap.values():
                rec.pop("extents", None)
        assert diff_snapshots(want, got) == []
        # what snapshot() does not look at: nanosecond times and sizes from lstat, link counts, xattrs one by one
        for rel in (b"files/100k-random", b"links/a/one", b"times/before-1970", b"times/year-2100",
                    b"names/bad-\xff\xfe", b"symlinks/non-utf8-target"):
            a, b = os.lstat(os.path.join(os.fsencode(src), rel)), os.lstat(os.path.join(os.fsencode(inside), rel))
            assert (b.st_mode, b.st_uid, b.st_gid, b.st_size, b.st_mtime_ns, b.st_nlink) == \
                (a.st_mode, a.st_uid, a.st_gid, a.st_size, a.st_mtime_ns, a.st_nlink), rel
        assert os.readlink(inside / "symlinks" / "long-target") == os.readlink(src / "symlinks" / "long-target")
        one, three = os.lstat(inside / "links" / "a" / "one"), os.lstat(inside / "links" / "b" / "three")
        assert one.st_ino == three.st_ino and one.st_nlink == 3
        for name in os.listxattr(src / "files" / "text.txt"):
            assert os.getxattr(inside / "files" / "text.txt", name) == os.getxattr(src / "files" / "text.txt", name)
        with pytest.raises(OSError) as exc:
            (inside / "files" / "new").write_text("no")
        assert exc.value.errno == errno.EROFS
        sparse = inside / "sparse" / "sparse.bin"
        with open(sparse, "rb") as f:
            for off in SPARSE_DATA_OFFSETS:
                assert os.pread(f.fileno(), 4096, off) == os.pread(os.open(src / "sparse" / "sparse.bin",
                                                                             os.O_RDONLY), 4096, off)
            assert os.pread(f.fileno(), 8, SPARSE_SIZE - 8) == bytes(8)
    assert not _mounted_here(mnt) and list(mnt.iterdir()) == []
    assert list((registered.home / "mounts").glob("*.json")) == []


def test_random_reads_of_a_large_file_match_the_source(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(7)
    data = rng.randbytes(12 * 1024 * 1024) + b"text " * 2_000_000  # many chunks, some compressible
    (src / "big.bin").write_bytes(data)
    _backup(registered, src)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(registered, mnt, "latest"):
        path = mnt / str(src).lstrip("/") / "big.bin"
        fd = os.open(path, os.O_RDONLY)
        try:
            # backwards first: the offsets of chunks never read before must still come out right
            for off in [len(data) - 5, len(data) // 2, 3, *(rng.randrange(len(data)) for _ in range(40))]:
                assert os.pread(fd, 70_000, off) == data[off:off + 70_000], off
        finally:
            os.close(fd)
        assert path.read_bytes() == data
        jobs = registered.ok("jobs", "--json").json_lines()
        running = [j for j in jobs if j["kind"] == "mount" and j["status"] == "Running"]
        assert len(running) == 1, jobs
        stopped = registered.ok("jobs", "stop", running[0]["job_id"], "--json").json_lines()[0]
        assert stopped["status"] == "Completed", "stopping a mount job unmounts it"
        assert not _mounted_here(mnt)


def test_mount_all_shows_each_recovery_point_as_a_dated_folder(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "plan.txt").write_text("first\n")
    first = _backup(registered, src)
    (src / "plan.txt").write_text("second version\n")
    second = _backup(registered, src)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(registered, mnt, "--all") as info:
        names = sorted(os.listdir(mnt))
        # both backups may start within one second; then the id decides the order of the names
        assert sorted(info["folders"]) == names and len(names) == 2
        by_id = {n.split("_")[1]: n for n in names}
        assert sorted(by_id) == sorted([first[:8], second[:8]])
        assert all(time.strptime(n.split("_")[0], "%Y-%m-%dT%H-%M-%S") for n in names)
        assert by_id[first[:8]].split("_")[0] <= by_id[second[:8]].split("_")[0]
        rel = str(src / "plan.txt").lstrip("/")
        assert (mnt / by_id[first[:8]] / rel).read_text() == "first\n"
        assert (mnt / by_id[second[:8]] / rel).read_text() == "second version\n"
        names = [by_id[first[:8]], by_id[second[:8]]]
        assert os.stat(mnt / names[0]).st_mode & 0o777 == 0o555
        r = registered("mount", "latest", mnt)
        assert r.code == 2 and "700802" in r.err and "already mounted" in r.err
        done = registered.ok("unmount", "--all", "--json").json_lines()
        assert [e["outcome"] for e in done if e["event"] == "unmounted"] == ["unmounted"]
        assert not _mounted_here(mnt)
    r = registered("unmount", mnt)
    assert r.code == 2 and "700804" in r.err


def test_idle_timer_counts_from_the_last_use(registered: Cli, tmp_path: Path) -> None:
    """The check the timer thread makes, driven by a fake clock."""
    from safehold.agent.mountfs import MountFS
    from safehold.agent.reader import ChunkReader
    from safehold.cli.context import load_agent
    from safehold.formats.chunks import Sealer

    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    _backup(registered, src)
    agent = load_agent(str(registered.home))
    clock = FakeClock()
    fs = MountFS(ChunkReader(agent.vault, agent.machine_id, Sealer(agent.keys)),
                 agent.vault.recovery_points(agent.machine_id), True, clock, idle_timeout_ns=6 * 3600 * 10**9)
    try:
        clock.advance(5 * 3600)
        assert not fs.idle.expired()
        fs.getattr(os.fsencode(src / "f.txt"))  # a use: the 6 hours start again
        clock.advance(5 * 3600)
        assert not fs.idle.expired()
        clock.advance(3600)
        assert fs.idle.expired()
        never = MountFS(fs.reader, [], False, clock, idle_timeout_ns=None)
        clock.advance(10**6)
        assert not never.idle.expired()
        never.close()
    finally:
        fs.close()


def test_a_mount_of_all_points_shows_new_backups_after_a_while(registered: Cli, tmp_path: Path) -> None:
    from safehold.agent.mountfs import MountFS, folder_name
    from safehold.agent.reader import ChunkReader
    from safehold.cli.context import load_agent
    from safehold.formats.chunks import Sealer

    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("one")
    _backup(registered, src)
    agent = load_agent(str(registered.home))
    clock = FakeClock()
    fs = MountFS(ChunkReader(agent.vault, agent.machine_id, Sealer(agent.keys)),
                 agent.vault.recovery_points(agent.machine_id), False, clock,
                 refresh=lambda: agent.vault.recovery_points(agent.machine_id))
    try:
        [first] = [n for n, _kind, _ino in fs.readdir(b"/") if n not in (b".", b"..")]
        (src / "f.txt").write_text("two")
        _backup(registered, src)
        clock.advance(5)
        assert [n for n, _k, _i in fs.readdir(b"/") if n not in (b".", b"..")] == [first]
        clock.advance(30)
        names = [n for n, _k, _i in fs.readdir(b"/") if n not in (b".", b"..")]
        latest = agent.vault.recovery_points(agent.machine_id)[-1]
        assert sorted(names) == sorted([first, folder_name(latest)])
        rel = os.fsencode(src / "f.txt")
        fh = fs.open(b"/" + folder_name(latest) + rel)
        assert fs.read(fh, 0, 100) == b"two"
        fs.release(fh)
    finally:
        fs.close()


def test_idle_timeout_unmounts_by_itself(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    _backup(registered, src)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(registered, mnt, "latest", "--idle-timeout", "1s") as info:
        assert info["idle_timeout_s"] == 1
        _wait(lambda: not _mounted_here(mnt), "the idle timeout to unmount")
        _wait(lambda: not list((registered.home / "mounts").glob("*.json")), "the mount record to go")
        _wait(lambda: not os.path.exists(f"/proc/{info['pid']}"), "the mount process to end")


def test_killed_mount_is_cleaned_up_by_the_next_mount_and_by_unmount(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    _backup(registered, src)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for finish in ("mount", "unmount"):
        with mounted(registered, mnt, "latest") as info:
            os.kill(info["pid"], signal.SIGKILL)
            _wait(lambda: _dead(mnt), "the mount to lose its process")
            with pytest.raises(OSError) as exc:
                os.listdir(mnt)
            assert exc.value.errno == errno.ENOTCONN
            if finish == "mount":
                r = registered.ok("mount", "latest", mnt)
                assert "whose process had stopped was cleaned up" in r.out
                assert (mnt / str(src).lstrip("/") / "f.txt").read_text() == "x"
            else:
                r = registered.ok("unmount", mnt)
                assert "its mount process had stopped" in r.out
                assert not _dead(mnt) and not _mounted_here(mnt)
                assert list((registered.home / "mounts").glob("*.json")) == []


def test_tampered_data_reads_as_an_io_error(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(bytes(range(256)) * 4000)
    (src / "b.txt").write_text("hello " * 1000)
    _backup(registered, src)
    vault = tmp_path / "vault"
    with sqlite3.connect(vault / "catalog.sqlite") as db:
        pack_id, offset, length = db.execute(
            "SELECT pack_id, offset, length FROM chunks WHERE kind = 0 ORDER BY length DESC").fetchone()
    pack = next((vault / "blobs" / "packs").rglob(pack_id))
    raw = bytearray(pack.read_bytes())
    raw[offset + length // 2] ^= 0x01
    pack.write_bytes(bytes(raw))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(registered, mnt, "latest") as info:
        inside = mnt / str(src).lstrip("/")
        with pytest.raises(OSError) as exc:
            (inside / "a.bin").read_bytes()
        assert exc.value.errno == errno.EIO
        assert (inside / "b.txt").read_text() == "hello " * 1000
        assert "does not authenticate" in Path(info["log"]).read_text()


def test_mount_point_and_fuse_problems_are_clear_errors(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x")
    _backup(registered, src)
    r = registered("mount", "latest", tmp_path / "missing")
    assert r.code == 2 and "700802" in r.err and "does not exist" in r.err
    r = registered("mount", "latest", src / "f.txt")
    assert r.code == 2 and "not a folder" in r.err
    r = registered("mount", "latest", src)
    assert r.code == 2 and "not empty" in r.err
    r = registered("mount", tmp_path)
    assert r.code == 2 and "700001" in r.err
    r = registered("mount", "latest", tmp_path, "--idle-timeout", "soon")
    assert r.code == 2 and "--idle-timeout" in r.err
    empty = tmp_path / "empty"
    empty.mkdir()
    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    r = registered("mount", "latest", empty, env={"PATH": str(no_tools)})
    assert r.code != 0 and "34542" in r.err and "fusermount3 is not installed" in r.err and "fuse3" in r.err
    r = registered("mount", "nope", empty)
    assert r.code != 0 and "700203" in r.err
    assert not _mounted_here(empty)


def test_allow_other_lets_other_users_in_with_the_files_permissions(registered: Cli, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's folders are closed to other users
    try:
        base.chmod(0o755)
        src = base / "src"
        src.mkdir(mode=0o755)
        (src / "open.txt").write_text("for everyone\n")
        (src / "open.txt").chmod(0o644)
        (src / "secret.txt").write_text("root only\n")
        (src / "secret.txt").chmod(0o600)
        _backup(registered, src)
        mnt = base / "mnt"
        mnt.mkdir(mode=0o755)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat"]
        inside = mnt / str(src).lstrip("/")
        with mounted(registered, mnt, "latest"):  # without --allow-other only the mounting user gets in
            r = subprocess.run([*nobody, str(inside / "open.txt")], capture_output=True, text=True)
            assert r.returncode != 0
        with mounted(registered, mnt, "latest", "--allow-other"):
            r = subprocess.run([*nobody, str(inside / "open.txt")], capture_output=True, text=True)
            assert r.returncode == 0 and r.stdout == "for everyone\n", r.stderr
            r = subprocess.run([*nobody, str(inside / "secret.txt")], capture_output=True, text=True)
            assert r.returncode != 0 and "Permission denied" in r.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
