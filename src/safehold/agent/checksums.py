"""The checksum store in the cache folder: per path, what the file looked like and the chunks it became.

A file whose size, mtime, ctime and inode match is not read again. SQLite; a damaged store is replaced
and rebuilt from the last recovery point by the backup engine (SalChecksumStoreInitializationFailed).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import msgspec

_enc = msgspec.msgpack.Encoder()
_dec_chunks = msgspec.msgpack.Decoder(list[bytes])
_dec_ext = msgspec.msgpack.Decoder(list[tuple[int, int]] | None)

SCHEMA = 1


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


class ChecksumStore:
    def __init__(self, path: Path, key_id: str) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            os.chmod(path, 0o600)  # every backed-up path name is in here
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER, "
                             "mtime INTEGER, ctime INTEGER, inode INTEGER, chunks BLOB, extents BLOB) "
                             "WITHOUT ROWID")
            meta = dict(self._db.execute("SELECT k, v FROM meta").fetchall())
            self._db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreDamaged(str(exc)) from exc
        if meta.get("schema") not in (None, str(SCHEMA)) or meta.get("key_id") not in (None, key_id):
            self._db.execute("DELETE FROM files")
            meta = {}
        self.empty = self._db.execute("SELECT 1 FROM files LIMIT 1").fetchone() is None
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
        row = self._db.execute("SELECT size, mtime, ctime, inode, chunks, extents FROM files WHERE path = ?",
                               (path,)).fetchone()
        if row is None:
            return None
        try:
            return FileState(row[0], row[1], row[2], row[3], _dec_chunks.decode(row[4]), _dec_ext.decode(row[5]))
        except msgspec.DecodeError:
            return None

    def put(self, path: bytes, state: FileState) -> None:
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (path, state.size, state.mtime_ns, state.ctime_ns, state.inode,
                          _enc.encode(state.chunks), _enc.encode(state.extents)))

    def commit(self, last_rp: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_rp', ?)", (last_rp,))
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")

    def close(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._db.close()
