"""Directory trees: one msgpack-encoded `Tree` per folder, stored as a chunk of kind tree.

Field meanings and ordering rules in docs/format.md §Trees. Names are bytes, exactly as the kernel gave them.
"""

from __future__ import annotations

import msgspec

from safehold.errors import raise_error

TREE_VERSION = 1

# Entry types
FILE = "f"
DIR = "d"
SYMLINK = "l"
FIFO = "p"
CHARDEV = "c"
BLOCKDEV = "b"
SOCKET = "s"
TYPES = frozenset({FILE, DIR, SYMLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET})


class Entry(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=False):
    name: bytes
    type: str
    mode: int  # permission bits incl. setuid, setgid, sticky (st_mode & 0o7777)
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int = 0
    ctime_ns: int = 0  # recorded for change tracking and audit; the kernel does not let it be restored
    size: int = 0
    user: str | None = None
    group: str | None = None
    inode: int = 0
    nlink: int = 1
    link_id: int = 0  # >0: hard-link group within this recovery point; every member carries the content
    target: bytes | None = None  # symlink target
    rdev: int | None = None  # device number of character and block devices
    xattrs: list[tuple[bytes, bytes]] | None = None  # without the POSIX ACL attributes
    acl_access: bytes | None = None  # system.posix_acl_access, kernel binary form
    acl_default: bytes | None = None  # system.posix_acl_default, kernel binary form
    extents: list[tuple[int, int]] | None = None  # sparse file: (offset, length) data regions; chunks hold them
    chunks: list[bytes] | None = None
    subtree: bytes | None = None  # folder: id of its Tree chunk


class Tree(msgspec.Struct, omit_defaults=True):
    v: int
    entries: list[Entry]


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Tree)


def encode(entries: list[Entry]) -> bytes:
    entries.sort(key=lambda e: e.name)
    return _enc.encode(Tree(TREE_VERSION, entries))


def decode(data: bytes) -> list[Entry]:
    try:
        tree = _dec.decode(data)
    except msgspec.DecodeError as exc:
        raise_error("IntegrityError", what=f"tree does not decode: {exc}")
    if tree.v != TREE_VERSION:
        raise_error("IntegrityError", what=f"tree version {tree.v} is not supported")
    names = [e.name for e in tree.entries]
    if names != sorted(set(names)):
        raise_error("IntegrityError", what="tree entries are not sorted and unique")
    for e in tree.entries:
        if e.type not in TYPES or not e.name or b"/" in e.name or b"\0" in e.name or e.name in (b".", b".."):
            raise_error("IntegrityError", what=f"tree entry {e.name!r} is invalid")
        if not (0 <= e.mode <= 0o7777 and 0 <= e.uid < 2**32 and 0 <= e.gid < 2**32 and e.size >= 0):
            raise_error("IntegrityError", what=f"tree entry {e.name!r} has out-of-range fields")
    return tree.entries
