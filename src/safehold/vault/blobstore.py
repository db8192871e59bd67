"""The blob-store adapter over obstore (local folder now; S3 and Azure Blob share the same calls).

Translates obstore's exceptions once, here.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import obstore
from obstore.exceptions import BaseError
from obstore.store import LocalStore


class ObjectBlobStore:
    def __init__(self, store: LocalStore) -> None:
        self._store = store

    @classmethod
    def local(cls, root: Path) -> ObjectBlobStore:
        root.mkdir(parents=True, exist_ok=True)
        return cls(LocalStore(str(root), mkdir=True))

    def put(self, name: str, data: bytes | memoryview) -> None:
        obstore.put(self._store, name, data)

    def get(self, name: str) -> bytes:
        return bytes(obstore.get(self._store, name).bytes())

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        try:
            return bytes(obstore.get_range(self._store, name, start=offset, length=length))
        except BaseError as exc:  # e.g. a range past the end: the caller sees an I/O error on that blob
            raise OSError(errno.EIO, f"{name}: {exc}".splitlines()[0]) from exc

    def size(self, name: str) -> int | None:
        try:
            return int(obstore.head(self._store, name)["size"])
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        obstore.delete(self._store, name)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        for batch in obstore.list(self._store, prefix):
            for meta in batch:
                yield meta["path"], int(meta["size"])
