"""Browsing recovery points without restoring them: look up a path, list a folder, find files by pattern
across recovery points with their distinct versions.

Reads trees only (no file data). A folder tree shared by several recovery points is searched once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field

from safehold.agent.reader import ChunkReader
from safehold.errors import raise_error
from safehold.formats import tree
from safehold.formats.tree import Entry
from safehold.model import RecoveryPoint


def _parts(path: str) -> list[bytes]:
    return [p for p in path.encode("utf-8", "surrogateescape").split(b"/") if p and p != b"."]


@dataclass
class Version:
    """One content of one path, and the recovery points that hold exactly it."""

    path: bytes
    entry: Entry
    recovery_points: list[RecoveryPoint] = field(default_factory=list)


class Browser:
    def __init__(self, reader: ChunkReader) -> None:
        self.reader = reader
        self._matches: dict[tuple[str, bytes], list[tuple[bytes, Entry]]] = {}

    def lookup(self, root: bytes, path: str) -> Entry:
        """The entry at `path` in the tree `root` (a synthetic folder for '/')."""
        entry = Entry(name=b"/", type=tree.DIR, mode=0o755, uid=0, gid=0, mtime_ns=0, subtree=root)
        for part in _parts(path):
            if entry.type != tree.DIR or entry.subtree is None:
                raise_error("InvalidArgument", what=f"{path} is not in this recovery point")
            found = next((e for e in self.reader.tree(entry.subtree) if e.name == part), None)
            if found is None:
                raise_error("InvalidArgument", what=f"{path} is not in this recovery point")
            entry = found
        return entry

    def listing(self, root: bytes, path: str) -> list[Entry]:
        """A folder's entries, or the entry itself for anything else (as `ls` does)."""
        entry = self.lookup(root, path)
        if entry.type == tree.DIR and entry.subtree is not None:
            return self.reader.tree(entry.subtree)
        return [entry]

    def _search(self, tid: bytes, pattern: str) -> list[tuple[bytes, Entry]]:
        """Entries below tree `tid` whose relative path or name matches; memoized per tree id."""
        hit = self._matches.get((pattern, tid))
        if hit is not None:
            return hit
        found: list[tuple[bytes, Entry]] = []
        for e in self.reader.tree(tid):
            name = e.name.decode("utf-8", "surrogateescape")
            if fnmatch.fnmatchcase(name, pattern):
                found.append((e.name, e))
            if e.type == tree.DIR and e.subtree is not None:
                for rel, sub in self._search(e.subtree, pattern):
                    found.append((e.name + b"/" + rel, sub))
        self._matches[(pattern, tid)] = found
        return found

    def find(self, rps: list[RecoveryPoint], pattern: str) -> Iterator[tuple[bytes, list[Version]]]:
        """Every path matching `pattern` (a shell pattern on the name, or on the whole path when it holds a
        '/'), with its distinct versions, oldest first."""
        whole = "/" in pattern
        name_pattern = pattern if not whole else "*"
        versions: dict[bytes, list[Version]] = {}
        for rp in rps:
            for rel, e in self._search(rp.root, name_pattern):
                path = b"/" + rel
                if whole and not fnmatch.fnmatchcase(path.decode("utf-8", "surrogateescape"), pattern):
                    continue
                known = versions.setdefault(path, [])
                same = next((v for v in known if _same(v.entry, e)), None)
                if same is None:
                    known.append(Version(path, e, [rp]))
                else:
                    same.recovery_points.append(rp)
        for path in sorted(versions):
            yield path, versions[path]


def _same(a: Entry, b: Entry) -> bool:
    return (a.type, a.size, a.mtime_ns, a.mode, a.uid, a.gid, a.chunks, a.target) == \
        (b.type, b.size, b.mtime_ns, b.mode, b.uid, b.gid, b.chunks, b.target)
