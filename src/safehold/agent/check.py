"""Verifying a machine's data in the vault: index against packs, every tree, and with `read_data` every byte.

Each problem names the recovery points it affects. Needs the machine key (trees and chunks are sealed).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from safehold.agent.events import EventSink, Progress
from safehold.agent.reader import ChunkReader
from safehold.errors import SafeholdError
from safehold.formats import pack as packfmt
from safehold.formats import tree
from safehold.model import ChunkId, ChunkLocation, PackId
from safehold.ports import VaultClient


@dataclass(frozen=True)
class Problem:
    what: str
    recovery_points: tuple[str, ...]


@dataclass
class CheckReport:
    recovery_points: int = 0
    trees: int = 0
    packs_read: int = 0
    chunks_verified: int = 0
    chunks_forgotten: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class CheckEngine:
    def __init__(self, vault: VaultClient, reader: ChunkReader, events: EventSink) -> None:
        self.vault = vault
        self.reader = reader
        self.machine_id = reader.machine_id
        self.events = events

    def run(self, read_data: bool, repair: bool = False) -> CheckReport:
        """Check everything; with `repair`, drop damaged chunks from the index afterwards."""
        report = CheckReport()
        rps = self.vault.recovery_points(self.machine_id)
        report.recovery_points = len(rps)
        index: dict[ChunkId, ChunkLocation] = dict(self.vault.index(self.machine_id))
        packs = dict(self.vault.packs(self.machine_id))
        bad: dict[ChunkId, str] = {}

        for cid, loc in index.items():
            size = packs.get(loc.pack_id)
            if size is None:
                bad[cid] = f"index entry for chunk {cid.hex()[:16]} names pack {loc.pack_id[:16]}, which is unknown"
            elif loc.offset < len(packfmt.HEADER) or loc.offset + loc.length > size:
                bad[cid] = f"index entry for chunk {cid.hex()[:16]} points outside pack {loc.pack_id[:16]}"

        if read_data:
            self._read_packs(index, packs, bad, report)

        # Trees: read and verify every tree of every recovery point; collect what each one references.
        seen_trees: dict[bytes, list[str]] = {}
        for rp in rps:
            for what in self._walk(rp.root, index, bad, seen_trees, report):
                report.problems.append(Problem(what, (rp.rp_id,)))

        # Damaged chunks found by index or data checks: report each with the recovery points that use it.
        if bad:
            users: dict[ChunkId, list[str]] = defaultdict(list)
            for rp in rps:
                for cid in self.vault.refs(self.machine_id, rp.rp_id):
                    if cid in bad:
                        users[cid].append(rp.rp_id)
            for cid, what in bad.items():
                report.problems.append(Problem(what, tuple(users.get(cid, ()))))
        report.problems = _merge(report.problems)
        if repair and bad:
            report.chunks_forgotten = self.vault.forget_chunks(self.machine_id, list(bad))
        return report

    def _read_packs(self, index: dict[ChunkId, ChunkLocation], packs: dict[PackId, int],
                    bad: dict[ChunkId, str], report: CheckReport) -> None:
        by_pack: dict[PackId, list[tuple[ChunkId, ChunkLocation]]] = defaultdict(list)
        for cid, loc in index.items():
            by_pack[loc.pack_id].append((cid, loc))
        done = 0
        for pid in packs:
            try:
                data = self.vault.read_pack(self.machine_id, pid)
            except SafeholdError as exc:
                for cid, _ in by_pack[pid]:
                    bad[cid] = f"pack {pid[:16]} cannot be read: {exc.text}"
                continue
            report.packs_read += 1
            hash_ok = packfmt.pack_id(data) == pid
            bad_before = len(bad)
            try:
                listed = {e.chunk_id: e for e in packfmt.read_entries(data, self.reader.sealer)}
            except SafeholdError as exc:
                listed = None
                report.problems.append(Problem(f"pack {pid[:16]} trailer: {exc.text}", ()))
            for cid, loc in by_pack[pid]:
                if listed is not None:
                    e = listed.get(cid)
                    if e is None or (e.offset, e.length, e.kind) != (loc.offset, loc.length, loc.kind):
                        bad.setdefault(cid, f"index entry for chunk {cid.hex()[:16]} disagrees with pack "
                                            f"{pid[:16]}")
                try:
                    self.reader.sealer.open(loc.kind, cid, data[loc.offset:loc.offset + loc.length])
                    report.chunks_verified += 1
                except SafeholdError as exc:
                    bad.setdefault(cid, f"chunk {cid.hex()[:16]} in pack {pid[:16]}: {exc.text}")
            if not hash_ok:
                what = f"pack {pid[:16]} does not match its hash (its bytes changed)"
                if len(bad) > bad_before or listed is None:
                    report.problems.append(Problem(what, ()))
                else:  # only bytes no index entry uses are damaged (e.g. chunks dropped by --repair)
                    report.notes.append(f"{what}, outside every chunk in use; housekeeping will repack it")
            done += len(data)
            self.events(Progress("check", report.packs_read, done, sum(packs.values()), 0.0))

    def _walk(self, tid: bytes, index: dict[ChunkId, ChunkLocation], bad: dict[ChunkId, str],
              seen: dict[bytes, list[str]], report: CheckReport) -> list[str]:
        """Problems found in and below one tree (memoized: shared subtrees are read once)."""
        if tid in seen:
            return seen[tid]
        found: list[str] = []
        seen[tid] = found
        if ChunkId(tid) in bad:
            return found  # reported with its users below
        try:
            entries = self.reader.tree(tid)
        except SafeholdError as exc:
            found.append(f"tree {tid.hex()[:16]}: {exc.text}")
            return found
        report.trees += 1
        for e in entries:
            if e.type == tree.DIR and e.subtree:
                found.extend(self._walk(e.subtree, index, bad, seen, report))
            for cid in e.chunks or ():
                if ChunkId(cid) not in index:
                    found.append(f"chunk {cid.hex()[:16]} of {e.name!r} is missing from the index")
        return found


def _merge(problems: list[Problem]) -> list[Problem]:
    merged: dict[str, list[str]] = {}
    for p in problems:
        merged.setdefault(p.what, []).extend(p.recovery_points)
    return [Problem(w, tuple(dict.fromkeys(r))) for w, r in merged.items()]
