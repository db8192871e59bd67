"""Fidelity harness: build a tree full of hard cases, snapshot everything that must survive, diff snapshots.

The bar is GNU tar and `rsync -aHAXS`: a backup round trip must lose nothing they keep.  Everything here
walks with fd-relative calls (`dir_fd=`), so paths longer than PATH_MAX (4096 bytes) work.

Public API:

- `build_tree(root)`: fill an existing empty folder with the hard cases (deterministic).
- `snapshot(root) -> dict[bytes, dict]`: relative path (bytes) -> every field that must survive.
- `diff_snapshots(a, b) -> list[str]`: human-readable differences, empty when equal.
- `compare(a, b) -> list[Difference]`: the same, structured (`.key` is "path: field" without values).
- `peer_losses(tree) -> dict[str, list[str]]`: what GNU tar and rsync lose on `tree` ("path: field" keys).
- `peer_report(tree) -> dict[str, PeerResult]`: the same with the differences and the tools' stderr.

Snapshots hold no atime, no ctime, no inode numbers and no directory sizes (all of which a faithful copy
cannot or need not keep).  Hard links are a canonical link group: the sorted tuple of every relative path
in the tree that shares the inode.  Sparse files are compared by their data extents (SEEK_DATA/SEEK_HOLE),
which are block-granular: compare trees on the same kind of file system (ext4 here).
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "ACL_GROUP",
    "ACL_GROUP_OBJ",
    "ACL_MASK",
    "ACL_OTHER",
    "ACL_USER",
    "ACL_USER_OBJ",
    "GID",
    "LONG_DEPTH",
    "NFC_CAFE",
    "NFD_CAFE",
    "SPARSE_DATA_OFFSETS",
    "SPARSE_SIZE",
    "T_BEFORE_1970",
    "T_MAX_NS",
    "T_ODD_NS",
    "T_YEAR_2100",
    "UID",
    "Difference",
    "PeerResult",
    "acl_xattr",
    "build_tree",
    "compare",
    "diff_snapshots",
    "long_name",
    "parse_acl_xattr",
    "peer_losses",
    "peer_report",
    "show_path",
    "snapshot",
    "walk",
]

# --- POSIX ACLs in the kernel's xattr format (linux/posix_acl_xattr.h) -------------------------------------

ACL_USER_OBJ = 0x01
ACL_USER = 0x02
ACL_GROUP_OBJ = 0x04
ACL_GROUP = 0x08
ACL_MASK = 0x10
ACL_OTHER = 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF
_ACL_VERSION = 2


def acl_xattr(entries: Iterable[tuple[int, int, int | None]]) -> bytes:
    """(tag, perm rwx bits, id or None) -> the value of system.posix_acl_access/_default.

    Entries are sorted by (tag, id) as the kernel requires."""
    ents = sorted((tag, ACL_UNDEFINED_ID if ident is None else ident, perm) for tag, perm, ident in entries)
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", t, p, i) for t, i, p in ents)


def parse_acl_xattr(value: bytes) -> list[tuple[int, int, int | None]]:
    """The inverse of acl_xattr: [(tag, perm, id or None)]."""
    (version,) = struct.unpack_from("<I", value)
    if version != _ACL_VERSION or (len(value) - 4) % 8:
        raise ValueError(f"not a POSIX ACL xattr: {value!r}")
    out: list[tuple[int, int, int | None]] = []
    for off in range(4, len(value), 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, off)
        out.append((tag, perm, None if ident == ACL_UNDEFINED_ID else ident))
    return out


# --- walking with fds -------------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def walk(root: Path | str | bytes, *, topdown: bool = True) -> Iterator[tuple[bytes, int, str, os.stat_result]]:
    """Yield (relative path, parent dir fd, name, lstat) for everything below root, sorted by name.

    The parent fd stays open only until the next item is requested; `name` is for `dir_fd=` calls.
    With topdown=False a directory comes after everything inside it (deepest first)."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        yield from _walk_fd(fd, b"", topdown)
    finally:
        os.close(fd)


def _walk_fd(fd: int, prefix: bytes, topdown: bool) -> Iterator[tuple[bytes, int, str, os.stat_result]]:
    with os.scandir(fd) as it:
        names = sorted((e.name for e in it), key=os.fsencode)
    for name in names:
        rel = prefix + os.fsencode(name)
        st = os.lstat(name, dir_fd=fd)
        if not stat.S_ISDIR(st.st_mode):
            yield rel, fd, name, st
            continue
        if topdown:
            yield rel, fd, name, st
        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        try:
            yield from _walk_fd(child, rel + b"/", topdown)
        finally:
            os.close(child)
        if not topdown:
            yield rel, fd, name, os.lstat(name, dir_fd=fd)


# --- building the tree ------------------------------------------------------------------------------------

KiB = 1024
MiB = 1024 * KiB
SEED = 20260415

UID = 123456  # not in /etc/passwd
GID = 654321  # not in /etc/group
UID2 = 234567
GID2 = 345678

LONG_DEPTH = 22  # 22 levels of 200-byte names: 4437 bytes to long/.../bottom.txt
LONG_NAME_LEN = 200

SPARSE_SIZE = 64 * MiB
SPARSE_DATA_OFFSETS = (1 * MiB, 17 * MiB + 8 * KiB, 40 * MiB, 63 * MiB)  # 4 KiB each, hole at the end

NFC_CAFE = "café".encode()  # b"caf\xc3\xa9"
NFD_CAFE = "cafe\u0301".encode()  # b"cafe\xcc\x81"

# times in ns since the epoch (ext4 with 256-byte inodes keeps ns and years 1901..2446)
T_BEFORE_1970 = -1234567890_123456789  # 1930-11-18
T_YEAR_2100 = 4102444800_123456789  # 2100-01-01T00:00:00.123456789Z
T_ODD_NS = 1234567890_000000001
T_MAX_NS = 1700000000_999999999
T_EPOCH = 0


def long_name(i: int) -> str:
    """The name of level i of the path beyond PATH_MAX: long/long_name(0)/.../long_name(LONG_DEPTH-1)."""
    head = f"{i:02d}-level-"
    return head + "L" * (LONG_NAME_LEN - len(head))


def _default_time(i: int) -> int:
    return (1_600_000_000 + i * 86_413) * 10**9 + (i * 123_456_791 + 7) % 10**9


class _Builder:
    def __init__(self, root: Path) -> None:
        self.root = os.fsencode(root)
        self.rng = random.Random(SEED)
        self.is_root = os.geteuid() == 0
        self.times: dict[bytes, int] = {}

    def p(self, rel: bytes) -> bytes:
        return os.path.join(self.root, rel)

    def mkdir(self, rel: bytes, mode: int = 0o755) -> None:
        os.mkdir(self.p(rel), mode)
        os.chmod(self.p(rel), mode)

    def write(self, rel: bytes, data: bytes, mode: int = 0o644) -> None:
        fd = os.open(self.p(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.chmod(self.p(rel), mode)

    def chown(self, rel: bytes, uid: int, gid: int) -> None:
        if self.is_root:
            os.chown(self.p(rel), uid, gid, follow_symlinks=False)

    def setxattr(self, rel: bytes, name: str, value: bytes, *, privileged: bool = False) -> None:
        try:
            os.setxattr(self.p(rel), name, value, follow_symlinks=False)
        except PermissionError:
            if not privileged:
                raise

    # the parts ------------------------------------------------------------------------------------------

    def files(self) -> None:
        self.mkdir(b"files")
        self.write(b"files/empty", b"")
        self.write(b"files/one-byte", b"x")
        self.write(b"files/100k-random", self.rng.randbytes(100 * KiB))
        a = self.rng.randbytes(1 * MiB)
        b = self.rng.randbytes(1 * MiB - 777)
        c = self.rng.randbytes(777)
        self.write(b"files/3m-repeated", a + b + a + c)  # the second copy of `a` starts unaligned
        self.write(b"files/text.txt", b"".join(b"line %d of some text\n" % i for i in range(200)))

    def names(self) -> None:
        self.mkdir(b"names")
        self.write(b"names/" + NFC_CAFE, b"NFC\n")
        self.write(b"names/" + NFD_CAFE, b"NFD\n")
        self.write(b"names/bad-\xff\xfe", b"not UTF-8\n")
        self.mkdir(b"names/dir-\xe9-latin1")
        self.write(b"names/dir-\xe9-latin1/inside", b"inside a non-UTF-8 folder\n")
        self.write(b"names/new\nline", b"newline in the name\n")
        self.write(b"names/ leading space", b"")
        self.write(b"names/-dash", b"")
        self.write(b"names/back\\slash", b"")
        self.write(b"names/" + "é".encode() * 127 + b"x", b"255-byte name\n")

    def long_path(self) -> None:
        self.mkdir(b"long")
        top = os.open(self.p(b"long"), _DIR_FLAGS)
        fds = [top]
        try:
            for i in range(LONG_DEPTH):
                name = long_name(i)
                os.mkdir(name, 0o755, dir_fd=fds[-1])
                fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
            bottom = fds[-1]
            fd = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644, dir_fd=bottom)
            try:
                _write_all(fd, b"at the bottom of a path longer than PATH_MAX\n" * 3)
                os.setxattr(fd, "user.deep", b"xattr beyond PATH_MAX")
            finally:
                os.close(fd)
            os.symlink("bottom.txt", "bottom-link", dir_fd=bottom)
            os.link("bottom.txt", "top-hardlink", src_dir_fd=bottom, dst_dir_fd=top)
        finally:
            for fd in fds:
                os.close(fd)

    def empty_dirs(self) -> None:
        self.mkdir(b"empty")
        self.mkdir(b"empty/nested-empty")
        self.mkdir(b"empty/nested-empty/deeper")

    def hard_links(self) -> None:
        self.mkdir(b"links")
        self.mkdir(b"links/a")
        self.mkdir(b"links/b")
        self.write(b"links/a/one", b"three names, one inode\n")
        os.link(self.p(b"links/a/one"), self.p(b"links/a/two"))
        os.link(self.p(b"links/a/one"), self.p(b"links/b/three"))
        self.write(b"links/empty-a", b"")
        os.link(self.p(b"links/empty-a"), self.p(b"links/b/empty-b"))

    def symlinks(self) -> None:
        self.mkdir(b"symlinks")
        os.symlink(b"../files/one-byte", self.p(b"symlinks/relative"))
        os.symlink(b"/etc/hostname", self.p(b"symlinks/absolute"))
        os.symlink(b"no/such/target", self.p(b"symlinks/dangling"))
        os.symlink(b"bad-\xff\xfe-target", self.p(b"symlinks/non-utf8-target"))
        os.symlink(b"../names", self.p(b"symlinks/to-dir"))
        os.symlink(b"x/" * 1500 + b"end", self.p(b"symlinks/long-target"))  # 3003 bytes

    def special(self) -> None:
        self.mkdir(b"special")
        os.mkfifo(self.p(b"special/fifo"), 0o640)
        os.chmod(self.p(b"special/fifo"), 0o640)
        # a socket node: rsync keeps it, tar skips it
        os.mknod(self.p(b"special/socket"), stat.S_IFSOCK | 0o600)
        os.chmod(self.p(b"special/socket"), 0o600)
        if self.is_root:
            os.mknod(self.p(b"special/char-1-3"), stat.S_IFCHR | 0o620, os.makedev(1, 3))
            os.mknod(self.p(b"special/block-259-70000"), stat.S_IFBLK | 0o660, os.makedev(259, 70000))

    def sparse(self) -> None:
        self.mkdir(b"sparse")
        fd = os.open(self.p(b"sparse/sparse.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, SPARSE_SIZE)
            for off in SPARSE_DATA_OFFSETS:
                os.pwrite(fd, self.rng.randbytes(4 * KiB), off)
        finally:
            os.close(fd)
        fd = os.open(self.p(b"sparse/all-hole.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, 16 * MiB)
        finally:
            os.close(fd)
        fd = os.open(self.p(b"sparse/ends-with-data.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o644)
        try:
            os.pwrite(fd, self.rng.randbytes(5000), 8 * MiB)  # hole first, data to the end, partial block
        finally:
            os.close(fd)

    def owners(self) -> None:
        self.mkdir(b"owners")
        self.write(b"owners/file", b"owned by uid 123456 gid 654321\n")
        self.chown(b"owners/file", UID, GID)
        self.mkdir(b"owners/dir")
        self.write(b"owners/dir/inside", b"")
        self.chown(b"owners/dir", UID2, GID2)
        self.chown(b"owners/dir/inside", UID2, 0)
        os.symlink(b"file", self.p(b"owners/symlink"))
        self.chown(b"owners/symlink", UID, GID)

    def modes(self) -> None:
        self.mkdir(b"modes")
        # chown first: it clears setuid/setgid, so the order on restore matters too
        self.write(b"modes/setuid", b"#!/bin/sh\n", 0o755)
        self.chown(b"modes/setuid", UID, GID)
        os.chmod(self.p(b"modes/setuid"), 0o4755)
        self.write(b"modes/setgid", b"#!/bin/sh\n", 0o755)
        self.chown(b"modes/setgid", UID, GID)
        os.chmod(self.p(b"modes/setgid"), 0o2755)
        self.mkdir(b"modes/sticky-dir", 0o1777)
        self.write(b"modes/sticky-dir/in-sticky", b"")
        self.mkdir(b"modes/setgid-dir", 0o2775)
        self.write(b"modes/setgid-dir/inherits", b"")
        self.write(b"modes/zero", b"mode 000\n", 0o000)
        self.write(b"modes/rw-r-----", b"", 0o640)
        self.write(b"modes/odd-0o537", b"", 0o537)
        self.mkdir(b"modes/read-only-dir")
        self.write(b"modes/read-only-dir/inside", b"in a 0555 folder\n", 0o444)
        os.chmod(self.p(b"modes/read-only-dir"), 0o555)

    def times_(self) -> None:
        self.mkdir(b"times")
        for rel, t in [
            (b"times/before-1970", T_BEFORE_1970),
            (b"times/year-2100", T_YEAR_2100),
            (b"times/odd-ns", T_ODD_NS),
            (b"times/max-ns", T_MAX_NS),
            (b"times/epoch", T_EPOCH),
        ]:
            self.write(rel, rel + b"\n")
            self.times[rel] = t
        os.symlink(b"before-1970", self.p(b"times/symlink-2100"))
        self.times[b"times/symlink-2100"] = T_YEAR_2100 + 2
        self.mkdir(b"times/dir-before-1970")
        self.write(b"times/dir-before-1970/child", b"")
        self.times[b"times/dir-before-1970"] = T_BEFORE_1970 - 2 * 10**9
        self.times[b"times/dir-before-1970/child"] = T_YEAR_2100 + 4

    def xattrs(self) -> None:
        self.mkdir(b"xattrs")
        self.write(b"xattrs/file", b"has xattrs\n")
        self.setxattr(b"xattrs/file", "user.plain", b"plain value")
        self.setxattr(b"xattrs/file", "user.binary", bytes(range(256)))
        self.setxattr(b"xattrs/file", "user.empty", b"")
        self.setxattr(b"xattrs/file", "user.unicode-näme", "välue ✓".encode())
        self.write(b"xattrs/big-value", b"")
        self.setxattr(b"xattrs/big-value", "user.big", bytes(self.rng.randbytes(2000)))
        self.mkdir(b"xattrs/dir")
        self.setxattr(b"xattrs/dir", "user.on-dir", b"directory value")
        self.setxattr(b"xattrs/dir", "user.empty", b"")
        if self.is_root:
            self.setxattr(b"xattrs/file", "trusted.safehold", b"trusted namespace", privileged=True)
            # file capabilities (cap_net_raw+ep, VFS_CAP_REVISION_2); set after chown/chmod, which clear them
            self.write(b"xattrs/capability", b"#!/bin/sh\n", 0o755)
            cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
            self.setxattr(b"xattrs/capability", "security.capability", cap, privileged=True)
            os.symlink(b"file", self.p(b"xattrs/symlink"))  # user.* is refused on symlinks, trusted.* is not
            self.setxattr(b"xattrs/symlink", "trusted.on-symlink", b"symlink value", privileged=True)

    def acls(self) -> None:
        self.mkdir(b"acl")
        self.write(b"acl/file", b"has an access ACL\n", 0o640)
        self.setxattr(b"acl/file", "system.posix_acl_access", acl_xattr([
            (ACL_USER_OBJ, 6, None), (ACL_USER, 4, UID), (ACL_GROUP_OBJ, 4, None),
            (ACL_GROUP, 6, GID), (ACL_MASK, 6, None), (ACL_OTHER, 0, None),
        ]))
        self.mkdir(b"acl/default-dir", 0o750)
        self.setxattr(b"acl/default-dir", "system.posix_acl_access", acl_xattr([
            (ACL_USER_OBJ, 7, None), (ACL_USER, 5, UID2), (ACL_GROUP_OBJ, 5, None),
            (ACL_MASK, 5, None), (ACL_OTHER, 0, None),
        ]))
        self.setxattr(b"acl/default-dir", "system.posix_acl_default", acl_xattr([
            (ACL_USER_OBJ, 7, None), (ACL_USER, 7, UID), (ACL_GROUP_OBJ, 5, None),
            (ACL_GROUP, 5, GID), (ACL_MASK, 7, None), (ACL_OTHER, 5, None),
        ]))
        # created after the default ACL: the kernel gives them inherited ACLs
        self.write(b"acl/default-dir/inherited-file", b"inherits an access ACL\n", 0o666)
        os.mkdir(self.p(b"acl/default-dir/inherited-dir"), 0o777)

    def set_times(self) -> None:
        """Every entry gets a fixed mtime; folders last, deepest first, after everything in them exists."""
        for i, (rel, fd, name, _st) in enumerate(walk(self.root, topdown=False)):
            t = self.times.get(rel, _default_time(i))
            os.utime(name, ns=(t, t), dir_fd=fd, follow_symlinks=False)
        t = _default_time(10_000)
        os.utime(self.root, ns=(t, t))


def build_tree(root: Path) -> None:
    """Fill the existing empty folder `root` with the hard cases.  Deterministic; about 3.5 MiB of data.

    Root-only parts (device nodes, foreign owners, trusted.* and security.capability xattrs) are left out
    when not running as root."""
    with os.scandir(root) as it:
        if any(it):
            raise ValueError(f"{root} is not empty")
    b = _Builder(root)
    b.files()
    b.names()
    b.long_path()
    b.empty_dirs()
    b.hard_links()
    b.symlinks()
    b.special()
    b.sparse()
    b.owners()
    b.modes()
    b.times_()
    b.xattrs()
    b.acls()
    b.set_times()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# --- snapshots --------------------------------------------------------------------------------------------

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "chr",
    stat.S_IFBLK: "blk",
    stat.S_IFSOCK: "socket",
}


def snapshot(root: Path) -> dict[bytes, dict[str, Any]]:
    """Relative path (bytes) -> everything about it that must survive a round trip.  The root is left out.

    Fields: type, mode (full st_mode), uid, gid, mtime_ns, xattrs ({name: value}, ACLs included); files:
    size, sha256, extents (data regions as (start, end) pairs), link_group; symlinks: size, target,
    link_group; devices: rdev; other non-directories: link_group."""
    snap: dict[bytes, dict[str, Any]] = {}
    inodes: dict[tuple[int, int], list[bytes]] = {}
    for rel, fd, name, st in walk(root):
        kind = _TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
        rec: dict[str, Any] = {
            "type": kind,
            "mode": st.st_mode,
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
        }
        if kind == "file":
            rec.update(_file_fields(fd, name, st))
        elif kind == "symlink":
            rec["size"] = st.st_size
            rec["target"] = os.readlink(os.fsencode(name), dir_fd=fd)
            rec["xattrs"] = _xattrs_opath(fd, name)
        elif kind == "dir":
            dfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            try:
                rec["xattrs"] = _xattrs_of_fd(dfd)
            finally:
                os.close(dfd)
        else:
            if kind in ("chr", "blk"):
                rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            rec["xattrs"] = _xattrs_opath(fd, name)
        if kind != "dir":
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        snap[rel] = rec
    for paths in inodes.values():
        group = tuple(sorted(paths))
        for rel in paths:
            snap[rel]["link_group"] = group
    return snap


def _file_fields(dir_fd: int, name: str, st: os.stat_result) -> dict[str, Any]:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError:
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except PermissionError as e:  # not root and mode 000: record that instead of the content
            unreadable = f"<unreadable: {e.strerror}>"
            return {"size": st.st_size, "sha256": unreadable, "extents": unreadable,
                    "xattrs": _xattrs_opath(dir_fd, name)}
    try:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 * MiB):
            h.update(chunk)
        size = os.fstat(fd).st_size
        return {
            "size": size,
            "sha256": h.hexdigest(),
            "extents": _extents(fd, size),
            "xattrs": _xattrs_of_fd(fd),
        }
    finally:
        os.close(fd)


def _extents(fd: int, size: int) -> tuple[tuple[int, int], ...]:
    """Data regions as merged (start, end) pairs clipped to the size; holes are what is left out."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # nothing but a hole from pos to the end
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
        pos = end
    return tuple(out)


def _xattrs_of_fd(fd: int) -> dict[str, bytes]:
    return {n: os.getxattr(fd, n) for n in sorted(os.listxattr(fd))}


def _xattrs_opath(dir_fd: int, name: str) -> dict[str, bytes]:
    """xattrs of a symlink, FIFO or device without following or opening it: an O_PATH fd seen through
    /proc/self/fd, whose magic link leads to the inode itself (f*xattr calls refuse O_PATH fds)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        proc = f"/proc/self/fd/{fd}"
        return {n: os.getxattr(proc, n) for n in sorted(os.listxattr(proc))}
    finally:
        os.close(fd)


# --- differences ------------------------------------------------------------------------------------------

_ABSENT = "<absent>"


def show_path(path: bytes) -> str:
    """A readable, unambiguous-enough form of a path: non-UTF-8 bytes as \\xNN, very long paths cut."""
    s = path.decode("utf-8", "backslashreplace").replace("\n", "\\n")
    if len(s) > 160:
        s = f"{s[:60]}…[{len(path)} bytes]…{s[-60:]}"
    return s


def _show_value(field_name: str, v: object) -> str:
    if v is _ABSENT:
        return _ABSENT
    if field_name == "mode" and isinstance(v, int):
        return oct(v)
    if field_name == "link_group" and isinstance(v, tuple):
        return "(" + ", ".join(show_path(p) for p in v) + ")"
    r = repr(v)
    return r if len(r) <= 120 else f"{r[:100]}…[{len(r)} chars]"


class Difference(NamedTuple):
    path: bytes
    field: str  # "missing", "extra", a field name, or "xattr NAME"
    a: object
    b: object

    @property
    def key(self) -> str:
        """'path: field', without the values: what to compare across tools."""
        return f"{show_path(self.path)}: {self.field}"

    def __str__(self) -> str:
        if self.field in ("missing", "extra"):
            return self.key
        return f"{self.key}: {_show_value(self.field, self.a)} != {_show_value(self.field, self.b)}"


def compare(a: dict[bytes, dict[str, Any]], b: dict[bytes, dict[str, Any]]) -> list[Difference]:
    """Everything that differs between two snapshots, in path order."""
    out: list[Difference] = []
    for path in sorted(a.keys() | b.keys()):
        if path not in b:
            out.append(Difference(path, "missing", a[path].get("type"), _ABSENT))
            continue
        if path not in a:
            out.append(Difference(path, "extra", _ABSENT, b[path].get("type")))
            continue
        ra, rb = a[path], b[path]
        for f in sorted(ra.keys() | rb.keys()):
            va, vb = ra.get(f, _ABSENT), rb.get(f, _ABSENT)
            if va == vb:
                continue
            if f == "xattrs" and isinstance(va, dict) and isinstance(vb, dict):
                for n in sorted(va.keys() | vb.keys()):
                    xa, xb = va.get(n, _ABSENT), vb.get(n, _ABSENT)
                    if xa != xb:
                        out.append(Difference(path, f"xattr {n}", xa, xb))
            else:
                out.append(Difference(path, f, va, vb))
    return out


def diff_snapshots(a: dict[bytes, dict[str, Any]], b: dict[bytes, dict[str, Any]]) -> list[str]:
    """Human-readable differences ('path: field: a != b'); an empty list when the snapshots are equal."""
    return [str(d) for d in compare(a, b)]


# --- peers: GNU tar and rsync -----------------------------------------------------------------------------


@dataclass
class PeerResult:
    """One peer's copy of a tree: what it lost compared to the source, and what it said."""

    name: str
    commands: list[list[str]]
    returncodes: list[int]
    stderr: str
    differences: list[Difference] = field(default_factory=list)

    @property
    def losses(self) -> list[str]:
        failed = [f"<{' '.join(cmd[:2])}… exited {rc}>" for cmd, rc in zip(self.commands, self.returncodes,
                                                                          strict=True) if rc != 0]
        return failed + [d.key for d in self.differences]


TAR_CREATE = ["tar", "--xattrs", "--xattrs-include=*", "--acls", "--sparse", "--numeric-owner", "-cpf"]
TAR_EXTRACT = ["tar", "-xpf", "{archive}", "--xattrs", "--xattrs-include=*", "--acls", "--numeric-owner"]
RSYNC = ["rsync", "-aHAXS", "--numeric-ids"]


def _run(cmds: list[list[str]]) -> tuple[list[int], str]:
    rcs: list[int] = []
    err: list[str] = []
    for cmd in cmds:
        p = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=600, check=False)
        rcs.append(p.returncode)
        err.append(p.stderr.decode("utf-8", "backslashreplace"))
    return rcs, "".join(err)


def _peer_commands(src: Path, work: Path) -> dict[str, tuple[list[list[str]], Path]]:
    tar_dst, rsync_dst, archive = work / "tar", work / "rsync", work / "tree.tar"
    return {
        "tar": ([
            [*TAR_CREATE, str(archive), "-C", str(src), "."],
            [x.replace("{archive}", str(archive)) for x in TAR_EXTRACT] + ["-C", str(tar_dst)],
        ], tar_dst),
        "rsync": ([[*RSYNC, f"{src}/", f"{rsync_dst}/"]], rsync_dst),
    }


def peer_report(tree: Path) -> dict[str, PeerResult]:
    """Copy `tree` with each peer found on PATH (GNU tar, rsync) and compare each copy with the source.

    Copies go in a temporary folder beside `tree` (same file system) that is removed afterwards.  A peer
    that fails part-way (say, on a path longer than PATH_MAX) is not an error: what it did not copy shows
    up as losses."""
    before = snapshot(tree)
    results: dict[str, PeerResult] = {}
    with tempfile.TemporaryDirectory(dir=tree.parent, prefix=".peers-") as tmp:
        work = Path(tmp)
        for name, (cmds, dst) in _peer_commands(tree, work).items():
            if shutil.which(cmds[0][0]) is None:
                continue
            dst.mkdir()
            rcs, err = _run(cmds)
            results[name] = PeerResult(name, cmds, rcs, err, compare(before, snapshot(dst)))
    return results


def peer_losses(tree: Path) -> dict[str, list[str]]:
    """Peer name -> what it loses on `tree`, as 'path: field' keys (see Difference.key), plus an
    '<tool exited N>' entry per failed command.  Peers missing from PATH are left out."""
    return {name: r.losses for name, r in peer_report(tree).items()}
