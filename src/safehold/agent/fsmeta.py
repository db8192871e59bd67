"""Reading and applying file metadata with directory-relative system calls.

Everything goes through (directory fd, name) so that paths longer than PATH_MAX work. Content is elsewhere.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from functools import lru_cache

from safehold.formats import tree
from safehold.formats.tree import Entry

ACL_ACCESS = b"system.posix_acl_access"
ACL_DEFAULT = b"system.posix_acl_default"
PATH_MAX = 4096
_NOT_SUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EACCES, errno.ENODATA, errno.ENOENT}

TYPE_OF = {
    stat.S_IFREG: tree.FILE, stat.S_IFDIR: tree.DIR, stat.S_IFLNK: tree.SYMLINK, stat.S_IFIFO: tree.FIFO,
    stat.S_IFCHR: tree.CHARDEV, stat.S_IFBLK: tree.BLOCKDEV, stat.S_IFSOCK: tree.SOCKET,
}
IFMT_OF = {v: k for k, v in TYPE_OF.items()}


@lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@lru_cache(maxsize=4096)
def group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def path_for(dir_fd: int, dir_path: bytes, name: bytes) -> tuple[bytes, int | None]:
    """A path usable by path-only calls (xattrs): the real path when short, else /proc/self/fd of an O_PATH fd."""
    full = dir_path + b"/" + name
    if len(full) < PATH_MAX - 1:
        return full, None
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=dir_fd)
    return f"/proc/self/fd/{fd}".encode(), fd


def fill_xattrs(e: Entry, dir_fd: int, dir_path: bytes, name: bytes, fd: int | None = None) -> None:
    """Set the entry's xattrs and ACLs from the item; file systems without xattrs leave them None."""
    e.xattrs, e.acl_access, e.acl_default = _read_xattrs(dir_fd, dir_path, name, fd)


def _read_xattrs(dir_fd: int, dir_path: bytes, name: bytes, fd: int | None = None
                 ) -> tuple[list[tuple[bytes, bytes]] | None, bytes | None, bytes | None]:
    """(other xattrs, access ACL, default ACL) of one item."""
    own: int | None = None
    try:
        if fd is not None:
            target: int | bytes = fd
            follow = True
        else:
            target, own = path_for(dir_fd, dir_path, name)
            follow = own is not None  # /proc/self/fd links must be followed; real paths must not
        try:
            names = os.listxattr(target, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno in _NOT_SUPPORTED:
                return None, None, None
            raise
        if not names:
            return None, None, None
        other: list[tuple[bytes, bytes]] = []
        acl_a = acl_d = None
        for n in sorted(names):
            try:
                value = os.getxattr(target, n, follow_symlinks=follow)
            except OSError as exc:
                if exc.errno in _NOT_SUPPORTED:
                    continue
                raise
            nb = os.fsencode(n)
            if nb == ACL_ACCESS:
                acl_a = value
            elif nb == ACL_DEFAULT:
                acl_d = value
            else:
                other.append((nb, value))
        return other or None, acl_a, acl_d
    finally:
        if own is not None:
            os.close(own)


# Kernel and virtual file systems: their files describe the running system, not data to keep. Mount points
# of these types are backed up as empty folders.
PSEUDO_FS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs", "tracefs", "pstore",
    "bpf", "mqueue", "hugetlbfs", "configfs", "fusectl", "binfmt_misc", "autofs", "efivarfs", "rpc_pipefs",
    "nsfs", "selinuxfs",
})


def pseudo_fs_devices(mountinfo: str = "/proc/self/mountinfo") -> set[int]:
    """Device numbers of every mounted kernel or virtual file system."""
    devs: set[int] = set()
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return devs
    for line in lines:
        left, _, right = line.partition(" - ")
        fstype = right.split(" ", 1)[0]
        fields = left.split(" ")
        if fstype in PSEUDO_FS and len(fields) > 2:
            major, _, minor = fields[2].partition(":")
            if major.isdigit() and minor.isdigit():
                devs.add(os.makedev(int(major), int(minor)))
    return devs


def entry_from_stat(name: bytes, st: os.stat_result) -> Entry:
    kind = TYPE_OF[stat.S_IFMT(st.st_mode)]
    return Entry(
        name=name, type=kind, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
        mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
        size=st.st_size if kind in (tree.FILE, tree.SYMLINK) else 0,
        user=user_name(st.st_uid), group=group_name(st.st_gid), inode=st.st_ino, nlink=st.st_nlink,
        rdev=st.st_rdev if kind in (tree.CHARDEV, tree.BLOCKDEV) else None,
    )


def data_extents(fd: int, size: int) -> list[tuple[int, int]] | None:
    """Data regions of a file with holes, or None when the file has no holes (the common case)."""
    extents: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append((start, end - start))
            pos = end
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    if extents == [(0, size)]:
        return None
    return extents


# ---- applying metadata (restore) ------------------------------------------------------------------

def apply_xattrs(fd_or_path: int | bytes, e: Entry, with_acls: bool, follow: bool) -> list[str]:
    """Set xattrs and ACLs; returns a problem text per attribute that the target refused."""
    problems: list[str] = []
    items = list(e.xattrs or [])
    if with_acls:
        if e.acl_access is not None:
            items.append((ACL_ACCESS, e.acl_access))
        if e.acl_default is not None:
            items.append((ACL_DEFAULT, e.acl_default))
    for n, v in items:
        try:
            os.setxattr(fd_or_path, n, v, follow_symlinks=follow)
        except OSError as exc:
            problems.append(f"xattr {n.decode(errors='backslashreplace')}: {exc.strerror}")
    return problems


def apply_meta(target: int | str, e: Entry, with_owner: bool, with_acls: bool) -> list[str]:
    """Owner, then xattrs and ACLs, then mode, then times, on an open fd or a /proc/self/fd path.

    The order matters: chown drops setuid/setgid and file capabilities; the mode must follow the ACL.
    Working on an fd (never on a path name) means a swapped symlink cannot redirect any of it.
    Returns a problem text per step the target refused.
    """
    problems: list[str] = []
    if with_owner:
        try:
            os.chown(target, e.uid, e.gid)
        except OSError as exc:
            problems.append(f"owner: {exc.strerror}")
    if e.xattrs or (with_acls and (e.acl_access or e.acl_default)):
        problems += apply_xattrs(os.fsencode(target) if isinstance(target, str) else target, e, with_acls,
                                 follow=True)
    try:
        if e.type != tree.SYMLINK:
            os.chmod(target, e.mode)
        os.utime(target, ns=(e.atime_ns or e.mtime_ns, e.mtime_ns))
    except OSError as exc:
        problems.append(f"mode or times: {exc.strerror}")
    return problems


def apply_symlink_meta(dir_fd: int, name: bytes, e: Entry, with_owner: bool) -> list[str]:
    """Owner and times of a symlink itself (AT_SYMLINK_NOFOLLOW); symlinks have no mode of their own."""
    problems: list[str] = []
    try:
        if with_owner:
            os.chown(name, e.uid, e.gid, dir_fd=dir_fd, follow_symlinks=False)
        os.utime(name, ns=(e.atime_ns or e.mtime_ns, e.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        problems.append(f"owner or times: {exc.strerror}")
    return problems


def read_xattrs_fd(fd: int) -> tuple[list[tuple[bytes, bytes]] | None, bytes | None, bytes | None]:
    """(other xattrs, access ACL, default ACL) of an open file."""
    return _read_xattrs(-1, b"", b"", fd)
