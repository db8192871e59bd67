"""Tests of the fidelity harness itself: the tree has what it promises, snapshots see every change that
matters, and GNU tar / rsync copies look equal to it except where those tools really lose something."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from fidelity import (
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_MASK,
    ACL_OTHER,
    ACL_USER,
    ACL_USER_OBJ,
    GID,
    LONG_DEPTH,
    NFC_CAFE,
    NFD_CAFE,
    SPARSE_DATA_OFFSETS,
    SPARSE_SIZE,
    T_BEFORE_1970,
    T_MAX_NS,
    T_ODD_NS,
    T_YEAR_2100,
    UID,
    acl_xattr,
    build_tree,
    compare,
    diff_snapshots,
    long_name,
    parse_acl_xattr,
    peer_report,
    snapshot,
)

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (device nodes, foreign owners)")
Snap = dict[bytes, dict]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fidelity") / "src"
    root.mkdir()
    build_tree(root)
    return root


@pytest.fixture(scope="module")
def snap(tree: Path) -> Snap:
    return snapshot(tree)


def fresh(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    build_tree(root)
    return root


def p(root: Path, rel: bytes) -> bytes:
    return os.path.join(os.fsencode(root), rel)


def long_paths(s: Snap) -> list[bytes]:
    return sorted((k for k in s if len(k) > 4096), key=len)


# --- (a) build_tree makes what it promises ------------------------------------------------------------------


def test_build_tree_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"")
    with pytest.raises(ValueError, match="not empty"):
        build_tree(tmp_path)


def test_long_path_is_beyond_path_max(tree: Path, snap: Snap) -> None:
    deep = long_paths(snap)
    assert deep, "no path longer than 4096 bytes"
    bottom = b"/".join([b"long", *(long_name(i).encode() for i in range(LONG_DEPTH)), b"bottom.txt"])
    assert bottom in deep and b"/".join([*bottom.split(b"/")[:-1], b"bottom-link"]) in deep
    assert bottom.endswith(b"/bottom.txt") and len(bottom) > 4096
    assert bottom.count(b"/") == LONG_DEPTH + 1
    assert all(len(part) == 200 for part in bottom.split(b"/")[1:-1])
    assert snap[bottom]["type"] == "file" and snap[bottom]["size"] > 0
    assert snap[bottom]["xattrs"] == {"user.deep": b"xattr beyond PATH_MAX"}
    # plain paths really cannot reach it: only fd-relative calls can
    with pytest.raises(OSError) as e:
        os.lstat(p(tree, bottom))
    assert e.value.errno == errno.ENAMETOOLONG
    # the hard link near the top shares the inode with the file beyond PATH_MAX
    assert snap[b"long/top-hardlink"]["link_group"] == tuple(sorted([bottom, b"long/top-hardlink"]))


def test_sparse_files_are_sparse(tree: Path, snap: Snap) -> None:
    st = os.lstat(tree / "sparse/sparse.bin")
    assert st.st_size == SPARSE_SIZE
    assert st.st_blocks * 512 < 1024 * 1024 < st.st_size
    assert snap[b"sparse/sparse.bin"]["extents"] == tuple((o, o + 4096) for o in SPARSE_DATA_OFFSETS)
    hole = os.lstat(tree / "sparse/all-hole.bin")
    assert hole.st_size == 16 * 1024 * 1024 and hole.st_blocks == 0
    assert snap[b"sparse/all-hole.bin"]["extents"] == ()
    assert snap[b"sparse/ends-with-data.bin"]["extents"] == ((8 * 1024 * 1024, 8 * 1024 * 1024 + 5000),)
    # dense files are one extent
    assert snap[b"files/3m-repeated"]["extents"] == ((0, 3 * 1024 * 1024),)
    assert snap[b"files/empty"]["extents"] == ()


def test_data_written_stays_small(tree: Path, snap: Snap) -> None:
    allocated = sum(st.st_blocks * 512 for st in (os.lstat(p(tree, k)) for k in snap if len(k) < 4000))
    apparent = sum(r.get("size", 0) for r in snap.values() if r["type"] == "file")
    assert allocated < 10 * 1024 * 1024 < apparent


def test_file_sizes(snap: Snap) -> None:
    sizes = {k: snap[k]["size"] for k in (b"files/empty", b"files/one-byte", b"files/100k-random",
                                          b"files/3m-repeated")}
    assert sizes == {b"files/empty": 0, b"files/one-byte": 1, b"files/100k-random": 100 * 1024,
                     b"files/3m-repeated": 3 * 1024 * 1024}


def test_repeated_region(tree: Path) -> None:
    data = (tree / "files/3m-repeated").read_bytes()
    mib = 1024 * 1024
    assert data[:mib] == data[2 * mib - 777:3 * mib - 777]
    assert data[:mib] != data[mib:2 * mib]


def test_names_are_bytes(tree: Path, snap: Snap) -> None:
    assert NFC_CAFE != NFD_CAFE
    assert b"names/" + NFC_CAFE in snap and b"names/" + NFD_CAFE in snap
    assert snap[b"names/" + NFC_CAFE]["sha256"] != snap[b"names/" + NFD_CAFE]["sha256"]
    names = set(os.listdir(p(tree, b"names")))
    assert {NFC_CAFE, NFD_CAFE, b"bad-\xff\xfe", b"new\nline"} <= names
    assert b"names/dir-\xe9-latin1/inside" in snap
    assert max(len(n) for n in names) == 255
    with pytest.raises(UnicodeDecodeError):
        b"bad-\xff\xfe".decode()


def test_empty_folders(snap: Snap) -> None:
    assert snap[b"empty/nested-empty/deeper"]["type"] == "dir"
    assert not [k for k in snap if k.startswith(b"empty/nested-empty/deeper/")]


def test_hard_links(tree: Path, snap: Snap) -> None:
    group = (b"links/a/one", b"links/a/two", b"links/b/three")
    for k in group:
        assert snap[k]["link_group"] == group
    assert os.lstat(tree / "links/a/one").st_ino == os.lstat(tree / "links/b/three").st_ino
    assert os.lstat(tree / "links/a/one").st_nlink == 3
    assert snap[b"links/empty-a"]["link_group"] == (b"links/b/empty-b", b"links/empty-a")
    assert snap[b"links/empty-a"]["size"] == 0
    assert snap[b"files/one-byte"]["link_group"] == (b"files/one-byte",)


def test_symlinks(tree: Path, snap: Snap) -> None:
    targets = {k: snap[b"symlinks/" + k]["target"] for k in (b"relative", b"absolute", b"dangling",
                                                            b"non-utf8-target")}
    assert targets == {b"relative": b"../files/one-byte", b"absolute": b"/etc/hostname",
                       b"dangling": b"no/such/target", b"non-utf8-target": b"bad-\xff\xfe-target"}
    assert all(snap[b"symlinks/" + k]["type"] == "symlink" for k in targets)
    assert not os.path.exists(tree / "symlinks/dangling")
    assert len(snap[b"symlinks/long-target"]["target"]) > 3000


def test_fifo(snap: Snap) -> None:
    assert snap[b"special/fifo"]["type"] == "fifo"
    assert stat.S_IMODE(snap[b"special/fifo"]["mode"]) == 0o640


@needs_root
def test_device_nodes(snap: Snap) -> None:
    assert snap[b"special/char-1-3"]["type"] == "chr" and snap[b"special/char-1-3"]["rdev"] == (1, 3)
    blk = snap[b"special/block-259-70000"]
    assert blk["type"] == "blk" and blk["rdev"] == (259, 70000)


@needs_root
def test_modes(snap: Snap) -> None:
    modes = {k: stat.S_IMODE(r["mode"]) for k, r in snap.items() if k.startswith(b"modes/")}
    assert modes[b"modes/setuid"] == 0o4755  # survived the chown to a foreign owner
    assert modes[b"modes/setgid"] == 0o2755
    assert modes[b"modes/sticky-dir"] == 0o1777
    assert modes[b"modes/setgid-dir"] == 0o2775
    assert modes[b"modes/zero"] == 0o000
    assert modes[b"modes/rw-r-----"] == 0o640
    assert modes[b"modes/read-only-dir"] == 0o555
    assert snap[b"modes/setuid"]["uid"] == UID


@needs_root
def test_numeric_owners_not_in_passwd(tree: Path, snap: Snap) -> None:
    with pytest.raises(KeyError):
        pwd.getpwuid(UID)
    with pytest.raises(KeyError):
        grp.getgrgid(GID)
    assert (snap[b"owners/file"]["uid"], snap[b"owners/file"]["gid"]) == (UID, GID)
    assert (snap[b"owners/symlink"]["uid"], snap[b"owners/symlink"]["gid"]) == (UID, GID)
    assert os.lstat(tree / "owners/symlink").st_uid == UID
    assert os.lstat(tree / "owners/file").st_uid == UID


def test_mtimes(tree: Path, snap: Snap) -> None:
    assert snap[b"times/before-1970"]["mtime_ns"] == T_BEFORE_1970 < 0
    assert snap[b"times/year-2100"]["mtime_ns"] == T_YEAR_2100
    assert snap[b"times/odd-ns"]["mtime_ns"] % 10**9 == T_ODD_NS % 10**9 == 1
    assert snap[b"times/max-ns"]["mtime_ns"] == T_MAX_NS
    assert snap[b"times/epoch"]["mtime_ns"] == 0
    assert snap[b"times/symlink-2100"]["mtime_ns"] == T_YEAR_2100 + 2
    assert snap[b"times/dir-before-1970"]["mtime_ns"] < 0  # a folder's time, set after its child was made
    assert os.lstat(tree / "times/dir-before-1970").st_mtime_ns == T_BEFORE_1970 - 2 * 10**9
    # every entry has a sub-second part, so losing nanoseconds anywhere shows
    assert all(r["mtime_ns"] % 10**9 for k, r in snap.items() if k != b"times/epoch")


def test_user_xattrs(snap: Snap) -> None:
    x = snap[b"xattrs/file"]["xattrs"]
    assert x["user.plain"] == b"plain value"
    assert x["user.binary"] == bytes(range(256))
    assert x["user.empty"] == b""
    assert snap[b"xattrs/dir"]["xattrs"] == {"user.empty": b"", "user.on-dir": b"directory value"}
    assert len(snap[b"xattrs/big-value"]["xattrs"]["user.big"]) == 2000


@needs_root
def test_privileged_xattrs(snap: Snap) -> None:
    assert snap[b"xattrs/file"]["xattrs"]["trusted.safehold"] == b"trusted namespace"
    assert len(snap[b"xattrs/capability"]["xattrs"]["security.capability"]) == 20
    assert snap[b"xattrs/symlink"]["xattrs"] == {"trusted.on-symlink": b"symlink value"}


def test_acls_are_set_and_read_back_by_the_kernel(tree: Path, snap: Snap) -> None:
    f = tree / "acl/file"
    assert "system.posix_acl_access" in os.listxattr(f)
    entries = parse_acl_xattr(os.getxattr(f, "system.posix_acl_access"))
    assert entries == [(ACL_USER_OBJ, 6, None), (ACL_USER, 4, UID), (ACL_GROUP_OBJ, 4, None), (ACL_GROUP, 6, GID),
                       (ACL_MASK, 6, None), (ACL_OTHER, 0, None)]
    assert stat.S_IMODE(os.lstat(f).st_mode) == 0o660  # the group bits show the mask
    d = tree / "acl/default-dir"
    default = parse_acl_xattr(os.getxattr(d, "system.posix_acl_default"))
    assert (ACL_USER, 7, UID) in default and (ACL_GROUP, 5, GID) in default
    assert "system.posix_acl_access" in os.listxattr(d)
    # files made inside got ACLs from the default one
    inherited = parse_acl_xattr(os.getxattr(d / "inherited-file", "system.posix_acl_access"))
    assert (ACL_USER, 7, UID) in inherited
    assert "system.posix_acl_default" in os.listxattr(d / "inherited-dir")
    assert snap[b"acl/file"]["xattrs"]["system.posix_acl_access"] == os.getxattr(f, "system.posix_acl_access")


def test_acl_format_matches_getfacl(tree: Path) -> None:
    if shutil.which("getfacl") is None:
        pytest.skip("getfacl not installed (Debian package acl)")
    out = subprocess.run(["getfacl", "-n", "-p", str(tree / "acl/file"), str(tree / "acl/default-dir")],
                         capture_output=True, text=True, check=True).stdout
    assert f"user:{UID}:r--" in out and f"group:{GID}:rw-" in out and "mask::rw-" in out
    assert f"default:user:{UID}:rwx" in out and f"default:group:{GID}:r-x" in out


def test_acl_xattr_round_trips() -> None:
    entries = [(ACL_OTHER, 5, None), (ACL_USER, 7, 10), (ACL_USER_OBJ, 7, None), (ACL_GROUP_OBJ, 5, None),
               (ACL_MASK, 7, None)]
    raw = acl_xattr(entries)
    assert raw[:4] == b"\x02\x00\x00\x00" and len(raw) == 4 + 8 * len(entries)
    assert parse_acl_xattr(raw) == sorted(entries, key=lambda e: (e[0], -1 if e[2] is None else e[2]))


def test_build_tree_is_deterministic(tmp_path: Path, snap: Snap) -> None:
    assert diff_snapshots(snap, snapshot(fresh(tmp_path))) == []


# --- (b) a snapshot equals itself ---------------------------------------------------------------------------


def test_snapshot_of_a_tree_equals_itself(tree: Path, snap: Snap) -> None:
    again = snapshot(tree)
    assert again == snap
    assert diff_snapshots(snap, again) == []
    assert b"." not in snap and b"" not in snap
    assert all(not k.startswith(b"/") for k in snap)
    assert not any("atime" in f or "ctime" in f for r in snap.values() for f in r)


def test_snapshot_fields(snap: Snap) -> None:
    assert set(snap[b"files/one-byte"]) == {"type", "mode", "uid", "gid", "mtime_ns", "size", "sha256", "extents",
                                            "xattrs", "link_group"}
    assert set(snap[b"symlinks/relative"]) >= {"target", "size", "mtime_ns", "uid", "gid", "link_group"}
    assert set(snap[b"empty"]) == {"type", "mode", "uid", "gid", "mtime_ns", "xattrs"}  # no size for folders


# --- (c) the harness sees what matters ----------------------------------------------------------------------

Mutation = Callable[[Path], None]


def _keep_mtime(path: bytes, change: Callable[[], None]) -> None:
    st = os.lstat(path)
    change()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _mtime_plus_1ns(root: Path) -> None:
    st = os.lstat(root / "files/one-byte")
    os.utime(root / "files/one-byte", ns=(st.st_atime_ns, st.st_mtime_ns + 1))


def _dir_mtime(root: Path) -> None:
    d = root / "times/dir-before-1970"
    os.utime(d, ns=(0, os.lstat(d).st_mtime_ns + 10**9))


def _symlink_mtime(root: Path) -> None:
    os.utime(root / "times/symlink-2100", ns=(0, 0), follow_symlinks=False)


def _xattr_value(root: Path) -> None:
    os.setxattr(root / "xattrs/file", "user.plain", b"plain valuE")


def _xattr_removed(root: Path) -> None:
    os.removexattr(root / "xattrs/dir", "user.empty")


def _hard_link_broken(root: Path) -> None:
    path = p(root, b"links/b/three")
    st = os.lstat(path)
    with open(path, "rb") as f:
        data = f.read()
    parent = os.path.dirname(path)
    pst = os.lstat(parent)
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(parent, ns=(pst.st_atime_ns, pst.st_mtime_ns))


def _mode(root: Path) -> None:
    os.chmod(root / "modes/rw-r-----", 0o644)


def _setuid_lost(root: Path) -> None:
    os.chmod(root / "modes/setuid", 0o755)


def _owner_of_symlink(root: Path) -> None:
    os.chown(root / "owners/symlink", UID + 1, GID, follow_symlinks=False)


def _acl_entry(root: Path) -> None:
    os.setxattr(root / "acl/file", "system.posix_acl_access", acl_xattr([
        (ACL_USER_OBJ, 6, None), (ACL_USER, 6, UID), (ACL_GROUP_OBJ, 4, None),
        (ACL_GROUP, 6, GID), (ACL_MASK, 6, None), (ACL_OTHER, 0, None),
    ]))


def _default_acl_removed(root: Path) -> None:
    os.removexattr(root / "acl/default-dir", "system.posix_acl_default")


def _sparse_made_dense(root: Path) -> None:
    path = p(root, b"sparse/sparse.bin")

    def fill() -> None:
        with open(path, "r+b") as f:
            data = f.read()
            f.seek(0)
            f.write(data)  # same bytes, holes now allocated

    _keep_mtime(path, fill)


def _content_same_size_and_mtime(root: Path) -> None:
    path = p(root, b"files/100k-random")

    def flip() -> None:
        with open(path, "r+b") as f:
            f.seek(50_000)
            b = f.read(1)
            f.seek(50_000)
            f.write(bytes([b[0] ^ 1]))

    _keep_mtime(path, flip)


def _symlink_target(root: Path) -> None:
    path = p(root, b"symlinks/dangling")
    st = os.lstat(path)
    pst = os.lstat(os.path.dirname(path))
    os.unlink(path)
    os.symlink(b"no/such/targex", path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    os.utime(os.path.dirname(path), ns=(pst.st_atime_ns, pst.st_mtime_ns))


def _rdev(root: Path) -> None:
    path = p(root, b"special/char-1-3")
    st = os.lstat(path)
    os.unlink(path)
    os.mknod(path, st.st_mode, os.makedev(1, 5))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _fifo_to_file(root: Path) -> None:
    path = p(root, b"special/fifo")
    os.unlink(path)
    with open(path, "wb"):
        pass


def _nfd_name_lost(root: Path) -> None:
    os.unlink(p(root, b"names/" + NFD_CAFE))


def _beyond_path_max(root: Path) -> None:
    """Change an xattr of the file at the bottom of the long path, through fds only."""
    fds = [os.open(root / "long", os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for i in range(LONG_DEPTH):
            fds.append(os.open(long_name(i), os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        fds.append(os.open("bottom.txt", os.O_RDONLY, dir_fd=fds[-1]))
        os.setxattr(fds[-1], "user.deep", b"changed")
    finally:
        for fd in fds:
            os.close(fd)


MUTATIONS: list[tuple[str, Mutation, str, bool]] = [
    ("mtime +1 ns", _mtime_plus_1ns, "files/one-byte: mtime_ns", False),
    ("folder mtime", _dir_mtime, "times/dir-before-1970: mtime_ns", False),
    ("symlink mtime", _symlink_mtime, "times/symlink-2100: mtime_ns", False),
    ("xattr value", _xattr_value, "xattrs/file: xattr user.plain", False),
    ("empty xattr removed", _xattr_removed, "xattrs/dir: xattr user.empty", False),
    ("hard link broken", _hard_link_broken, "links/a/one: link_group", False),
    ("mode", _mode, "modes/rw-r-----: mode", False),
    ("setuid bit lost", _setuid_lost, "modes/setuid: mode", True),
    ("symlink owner", _owner_of_symlink, "owners/symlink: uid", True),
    ("ACL entry", _acl_entry, "acl/file: xattr system.posix_acl_access", False),
    ("default ACL removed", _default_acl_removed, "acl/default-dir: xattr system.posix_acl_default", False),
    ("sparse file made dense", _sparse_made_dense, "sparse/sparse.bin: extents", False),
    ("content, same size and mtime", _content_same_size_and_mtime, "files/100k-random: sha256", False),
    ("symlink target", _symlink_target, "symlinks/dangling: target", False),
    ("device numbers", _rdev, "special/char-1-3: rdev", True),
    ("FIFO became a file", _fifo_to_file, "special/fifo: type", False),
    ("NFD twin lost", _nfd_name_lost, "names/cafe\u0301: missing", False),
]


@pytest.mark.parametrize(("mutate", "expected", "root_only"), [m[1:] for m in MUTATIONS],
                         ids=[m[0] for m in MUTATIONS])
def test_diff_sees(tmp_path: Path, mutate: Mutation, expected: str, root_only: bool) -> None:
    if root_only and not IS_ROOT:
        pytest.skip("needs root")
    root = fresh(tmp_path)
    before = snapshot(root)
    mutate(root)
    after = snapshot(root)
    keys = [d.key for d in compare(before, after)]
    assert expected in keys, keys
    lines = diff_snapshots(before, after)
    assert lines and any(line.startswith(expected) for line in lines)


def test_diff_isolates_the_change(tmp_path: Path) -> None:
    """Filling a sparse file's holes with the same zeros changes its extents and nothing else."""
    root = fresh(tmp_path)
    before = snapshot(root)
    _sparse_made_dense(root)
    assert [d.key for d in compare(before, snapshot(root))] == ["sparse/sparse.bin: extents"]


def test_diff_sees_changes_beyond_path_max(tmp_path: Path) -> None:
    root = fresh(tmp_path)
    before = snapshot(root)
    _beyond_path_max(root)
    diffs = compare(before, snapshot(root))
    assert len(diffs) == 2  # the same inode under both of its names
    assert {d.field for d in diffs} == {"xattr user.deep"}
    assert {len(d.path) > 4096 for d in diffs} == {True, False}


def test_diff_shows_values_readably() -> None:
    a = {b"bad-\xff": {"mode": 0o100644, "xattrs": {"user.x": b"1"}}, b"gone": {"type": "file"}}
    b = {b"bad-\xff": {"mode": 0o100600, "xattrs": {}}, b"new": {"type": "dir"}}
    assert diff_snapshots(a, b) == [
        "bad-\\xff: mode: 0o100644 != 0o100600",
        "bad-\\xff: xattr user.x: b'1' != <absent>",
        "gone: missing",
        "new: extra",
    ]
    assert diff_snapshots(a, a) == []


# --- (d) peers: what GNU tar and rsync keep, the harness must see as kept -----------------------------------


def test_peers_copies_look_mostly_equal(tree: Path, snap: Snap, capsys: pytest.CaptureFixture[str]) -> None:
    missing = [t for t in ("tar", "rsync") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/apt-packages.txt)")
    report = peer_report(tree)
    assert set(report) == {"tar", "rsync"}
    with capsys.disabled():
        print()
        for name, r in report.items():
            print(f"--- {name}: {len(r.differences)} differences over {len(snap)} entries "
                  f"(exit codes {r.returncodes}):")
            for line in r.losses:
                print(f"    {line}")

    def outside_long(keys: list[str]) -> set[str]:
        return {k for k in keys if not k.startswith("long/") and not k.startswith("<")}

    # nothing is flagged that neither tool keeps: outside the PATH_MAX subtree, every field is kept by one
    assert outside_long(report["tar"].losses) & outside_long(report["rsync"].losses) == set()
    for name, r in report.items():
        lost_paths = {d.path for d in r.differences}
        assert len(lost_paths) <= len(snap) // 10, f"{name}: {len(lost_paths)} entries differ"
        # what is lost in long/ is what lies beyond PATH_MAX, and the hard link to it
        for d in r.differences:
            if d.path.startswith(b"long/"):
                assert len(d.path) > 4095 or d.field == "link_group", str(d)
