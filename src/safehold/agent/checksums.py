"""The checksum store in the cache folder: per path, what the file looked like and the chunks it became.

A file whose size, mtime, ctime and inode match is not read again. SQLite, keyed by (folder, name) so that
one query answers a whole folder; writes go in batches. Per folder, the tree last stored for it and a
signature of the items the walk saw (docs/format.md, "Checksum store"): an unchanged folder is taken whole.
Files of a folder that has such a record get no row of their own; the record holds what a row would.
A damaged store is replaced and rebuilt from the last recovery point by the backup engine
(SalChecksumStoreInitializationFailed).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import msgspec

_enc = msgspec.msgpack.Encoder()
_dec_chunks = msgspec.msgpack.Decoder(list[bytes])
_dec_ext = msgspec.msgpack.Decoder(list[tuple[int, int]] | None)
XattrState = tuple[list[tuple[bytes, bytes]] | None, bytes | None, bytes | None]  # xattrs, access, default ACL
_dec_xattrs = msgspec.msgpack.Decoder(tuple[list[tuple[bytes, bytes]] | None, bytes | None, bytes | None] | None)

# 1 was keyed by the full path, 2 had no xattrs; such a store is dropped and rebuilt from the last recovery point.
# 3 had no chunk epoch in its folder records (NULL: checked at their next use), 4 no items: both get the columns.
SCHEMA = 5
_TREE_COLUMNS = {"epoch": "INTEGER", "items": "BLOB"}  # added to the trees of schema 3 and 4
PUT_BATCH = 2000
PUT_TREE_BYTES = 1024 * 1024  # folder records held before they are written


class StoreDamaged(Exception):
    pass


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    chunks: list[bytes]
    extents: list[tuple[int, int]] | None
    # xattrs and ACLs as read with this state: changing them changes the ctime, so while size, mtime, ctime
    # and inode match they need not be read again (None: not recorded, read them)
    xattrs: XattrState | None = None


FileRow = tuple[int, int, int, int, bytes, bytes, bytes]  # size, mtime, ctime, inode, chunks, extents, xattrs


class TreeRecord(NamedTuple):
    """A folder's record (docs/format.md, "Checksum store")."""

    sig: bytes  # of every item the walk kept
    tree: bytes  # the plaintext tree stored for it
    epoch: int | None  # the vault's chunk epoch when the tree's chunks were last known to be there
    items: bytes | None  # msgpack list of what the walk saw of each item, in the tree's order


def _state(row: FileRow) -> FileState | None:
    try:
        return FileState(row[0], row[1], row[2], row[3], _dec_chunks.decode(row[4]), _dec_ext.decode(row[5]),
                         _dec_xattrs.decode(row[6]))
    except msgspec.DecodeError:
        return None


class ChecksumStore:
    def __init__(self, path: Path, key_id: str) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            os.chmod(path, 0o600)  # every backed-up path name is in here
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            meta = dict(self._db.execute("SELECT k, v FROM meta").fetchall())
            if meta.get("schema") in ("3", "4"):
                have = {r[1] for r in self._db.execute("PRAGMA table_info(trees)")}
                for column, kind in _TREE_COLUMNS.items():
                    if column not in have:
                        self._db.execute(f"ALTER TABLE trees ADD COLUMN {column} {kind}")
            elif meta.get("schema") != str(SCHEMA):
                self._db.execute("DROP TABLE IF EXISTS files")
                self._db.execute("DROP TABLE IF EXISTS trees")
            self._db.execute("CREATE TABLE IF NOT EXISTS files (dir BLOB, name BLOB, size INTEGER, "
                             "mtime INTEGER, ctime INTEGER, inode INTEGER, chunks BLOB, extents BLOB, xattrs BLOB, "
                             "PRIMARY KEY (dir, name)) WITHOUT ROWID")
            self._db.execute("CREATE TABLE IF NOT EXISTS trees (dir BLOB PRIMARY KEY, sig BLOB, tree BLOB, "
                             "epoch INTEGER, items BLOB) WITHOUT ROWID")
            self._db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreDamaged(str(exc)) from exc
        if meta.get("key_id") not in (None, key_id):
            self._db.execute("DELETE FROM files")
            self._db.execute("DELETE FROM trees")
            meta = {}
        self._pending: list[tuple[bytes, bytes, int, int, int, int, bytes, bytes, bytes]] = []
        self._pending_trees: list[tuple[bytes, bytes, bytes, int | None, bytes]] = []
        self._pending_stamps: list[tuple[int, bytes]] = []
        self._pending_tree_bytes = 0
        # files read in a recorded folder have no row of their own (the record holds them): empty means neither
        self.empty = self._db.execute("SELECT 1 FROM files UNION ALL SELECT 1 FROM trees LIMIT 1").fetchone() is None
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?), ('key_id', ?)", (str(SCHEMA), key_id))
        self._db.execute("BEGIN")

    @classmethod
    def open_or_reset(cls, path: Path, key_id: str) -> tuple[ChecksumStore, str | None]:
        """Open the store; a damaged one is moved aside and replaced. Returns the damage text, if any."""
        try:
            return cls(path, key_id), None
        except StoreDamaged as exc:
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(path) + suffix)
                if p.exists():
                    os.replace(p, Path(str(p) + ".damaged"))
            return cls(path, key_id), str(exc)

    def get(self, path: bytes) -> FileState | None:
        folder, _, name = path.rpartition(b"/")
        self._write_pending()
        row = self._db.execute("SELECT size, mtime, ctime, inode, chunks, extents, xattrs FROM files "
                               "WHERE dir = ? AND name = ?", (folder, name)).fetchone()
        return None if row is None else _state(row)

    def folder(self, folder: bytes) -> dict[bytes, FileRow]:
        """Every recorded file directly in `folder` (a path without trailing slash), by name, undecoded:
        one query per folder instead of one per file. `state()` decodes the row of a file that matches."""
        self._write_pending()
        return {bytes(r[0]): r[1:] for r in self._db.execute(
            "SELECT name, size, mtime, ctime, inode, chunks, extents, xattrs FROM files WHERE dir = ?", (folder,))}

    @staticmethod
    def state(row: FileRow) -> FileState | None:
        return _state(row)

    def put(self, path: bytes, state: FileState) -> None:
        folder, _, name = path.rpartition(b"/")
        self._pending.append((folder, name, state.size, state.mtime_ns, state.ctime_ns, state.inode,
                              _enc.encode(state.chunks), _enc.encode(state.extents), _enc.encode(state.xattrs)))
        if len(self._pending) >= PUT_BATCH:
            self._write_pending()

    def tree(self, folder: bytes) -> TreeRecord | None:
        """The record the last backup that stored `folder` left of it, if any."""
        row = self._db.execute("SELECT sig, tree, epoch, items FROM trees WHERE dir = ?", (folder,)).fetchone()
        if row is None:
            return None
        return TreeRecord(bytes(row[0]), bytes(row[1]), row[2], None if row[3] is None else bytes(row[3]))

    def put_tree(self, folder: bytes, sig: bytes, data: bytes, epoch: int | None, items: bytes) -> None:
        self._pending_trees.append((folder, sig, data, epoch, items))
        self._pending_tree_bytes += len(data)
        if self._pending_tree_bytes >= PUT_TREE_BYTES:  # trees of big folders are big: held by size, not count
            self._write_pending()

    def _write_pending(self) -> None:
        if self._pending:
            self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", self._pending)
            self._pending = []
        if self._pending_trees:
            self._db.executemany("INSERT OR REPLACE INTO trees VALUES (?, ?, ?, ?, ?)", self._pending_trees)
            self._pending_trees = []
            self._pending_tree_bytes = 0
        if self._pending_stamps:
            self._db.executemany("UPDATE trees SET epoch = ? WHERE dir = ?", self._pending_stamps)
            self._pending_stamps = []

    def stamp_tree(self, folder: bytes, epoch: int) -> None:
        """The chunks of `folder`'s record were checked against the vault's ids at chunk epoch `epoch`."""
        self._pending_stamps.append((epoch, folder))
        if len(self._pending_stamps) >= PUT_BATCH:
            self._write_pending()

    def commit(self, last_rp: str) -> None:
        self._write_pending()
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_rp', ?)", (last_rp,))
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")

    def close(self) -> None:
        self._pending = []  # never committed: the job that wrote them did not end
        self._pending_trees = []
        self._pending_tree_bytes = 0
        self._pending_stamps = []
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._db.close()
