"""Keyless vault housekeeping: expire recovery points by each machine's retention, then collect the chunks and
packs no point uses, while backups keep running (docs/retention.md §Housekeeping).

A service on the catalog and the blob store of one `VaultService`; it never opens a chunk. Not a scheduler:
`vault serve` and `safehold vault housekeeping` decide when it runs.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import sqlalchemy as sa

from safehold.formats import pack as packfmt
from safehold.formats import retention as rules_of
from safehold.model import ChunkId, JobStatus, MachineId, PackId
from safehold.ports import Clock
from safehold.vault import catalog as t
from safehold.vault.service import VaultService, bump_chunk_epoch, lock_machine, pack_name

log = logging.getLogger("safehold.vault.housekeeping")
HOUR_NS = 3600 * 10**9
# A backup session open longer than this is abandoned (the agent crashed): it no longer holds garbage back.
SESSION_TTL_NS = 7 * 24 * HOUR_NS
# Packs whose live chunks fill less than this share of them are rewritten with only the live chunks.
REPACK_BELOW = 0.5
ADVISORY_KEY = 7_007_010_001  # one housekeeping at a time on a PostgreSQL catalog shared by vault servers


REPACK_MIN_GARBAGE = 64 * 1024  # bytes of garbage below which a pack is never rewritten


@dataclass
class Figures:
    """What one housekeeping run did (or, with dry_run, would do)."""

    machines: int = 0
    points_expired: int = 0
    sessions_abandoned: int = 0
    chunks_condemned: int = 0
    chunks_deleted: int = 0
    bytes_deleted: int = 0  # sealed chunk bytes dropped from the index
    packs_deleted: int = 0  # dropped from the catalog: all their chunks were garbage, or they were rewritten
    packs_rewritten: int = 0
    blobs_deleted: int = 0  # pack blobs removed from the blob store (after the grace period)
    blob_bytes_freed: int = 0
    dry_run: bool = False


@dataclass(frozen=True)
class _Chunk:
    chunk_id: bytes
    pack_id: str
    offset: int
    length: int
    kind: int
    condemned_ns: int | None


class Housekeeping:
    def __init__(self, svc: VaultService, clock: Clock | None = None, *, grace_ns: int = HOUR_NS,
                 session_ttl_ns: int = SESSION_TTL_NS, repack_below: float = REPACK_BELOW) -> None:
        self.svc = svc
        self.eng = svc.eng
        self.blobs = svc.blobs
        self.clock = clock or svc.clock
        self.grace_ns = grace_ns  # how long a dropped pack's blob stays for readers that located it before
        self.session_ttl_ns = session_ttl_ns
        self.repack_below = repack_below

    def run(self, dry_run: bool = False) -> Figures | None:
        """One pass over every machine; None when another housekeeping holds the vault (PostgreSQL)."""
        with self._exclusive() as mine:
            if not mine:
                return None
            started = self.clock.now_ns()
            fig = Figures(dry_run=dry_run)
            if not dry_run:
                with self.eng.begin() as c:
                    fig.sessions_abandoned = c.execute(sa.delete(t.sessions).where(
                        t.sessions.c.started_ns < started - self.session_ttl_ns)).rowcount
            with self.eng.connect() as c:
                machines = [MachineId(m) for m in c.execute(sa.select(t.machines.c.machine_id)).scalars()]
            for mid in machines:
                fig.machines += 1
                self._machine(mid, fig, dry_run)
            if not dry_run:
                with self.eng.begin() as c:
                    c.execute(sa.insert(t.housekeeping).values(
                        job_id=uuid.uuid4().hex, started_ns=started, ended_ns=self.clock.now_ns(),
                        status=str(JobStatus.COMPLETED), figures=asdict(fig)))
            return fig

    def history(self, limit: int = 20) -> list[dict[str, object]]:
        """The newest housekeeping runs, newest first."""
        h = t.housekeeping.c
        with self.eng.connect() as c:
            rows = c.execute(sa.select(t.housekeeping).order_by(h.started_ns.desc()).limit(limit)).all()
        return [dict(r._mapping) for r in rows]

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[bool]:
        if self.eng.dialect.name != "postgresql":
            yield True  # SQLite: one vault per file, and every step below is safe to repeat
            return
        with self.eng.connect() as c:
            got = bool(c.execute(sa.select(sa.func.pg_try_advisory_lock(ADVISORY_KEY))).scalar_one())
            c.commit()
            try:
                yield got
            finally:
                if got:
                    c.execute(sa.select(sa.func.pg_advisory_unlock(ADVISORY_KEY)))
                    c.commit()

    # ---- one machine ------------------------------------------------------------------------------------------

    def _machine(self, mid: MachineId, fig: Figures, dry_run: bool) -> None:
        expired = self._expire(mid, fig, dry_run)
        now = self.clock.now_ns()
        with self.eng.begin() as c:
            if not dry_run:
                lock_machine(c, mid)  # no commit or pack intake of this machine until the catalog is settled
            referenced = self._referenced(c, mid, expired)
            oldest = c.execute(sa.select(sa.func.min(t.sessions.c.started_ns)).where(
                t.sessions.c.machine_id == mid)).scalar_one_or_none()
            p = t.packs.c
            packs = {r.pack_id: (r.size, r.created_ns) for r in c.execute(
                sa.select(p.pack_id, p.size, p.created_ns).where(p.machine_id == mid, p.deleted_ns.is_(None)))}
            rows = [_Chunk(bytes(r.chunk_id), r.pack_id, r.offset, r.length, r.kind, r.condemned_ns)
                    for r in c.execute(sa.select(t.chunks).where(t.chunks.c.machine_id == mid))]

            def settled(pack_id: str) -> bool:
                """Written before every open session began: no running backup's uploads are in it."""
                return oldest is None or packs.get(pack_id, (0, oldest))[1] < oldest

            revive = [r.chunk_id for r in rows if r.condemned_ns is not None and r.chunk_id in referenced]
            condemn = [r.chunk_id for r in rows if r.condemned_ns is None and r.chunk_id not in referenced
                       and settled(r.pack_id)]
            # Swept: garbage that no open session can count on, as every open session began after it was
            # condemned (and so did not get it from known_chunks).
            condemned_now = set(condemn)
            sweep = [r for r in rows if r.chunk_id not in referenced and (r.condemned_ns is not None or
                     r.chunk_id in condemned_now) and (oldest is None or oldest > (r.condemned_ns or now))]
            fig.chunks_condemned += len(condemn)
            fig.chunks_deleted += len(sweep)
            fig.bytes_deleted += sum(r.length for r in sweep)
            gone = {r.chunk_id for r in sweep}
            live: dict[str, list[_Chunk]] = defaultdict(list)
            for r in rows:
                if r.chunk_id not in gone:
                    live[r.pack_id].append(r)
            empty = [pid for pid in packs if not live.get(pid) and settled(pid)]
            # Mostly garbage, and enough of it to be worth a rewrite: a small pack's own header and listing
            # would otherwise count as garbage and have it rewritten at every run.
            sparse = [pid for pid, (size, _) in packs.items() if live.get(pid) and settled(pid)
                      and sum(r.length for r in live[pid]) < self.repack_below * size
                      and size - sum(r.length for r in live[pid]) >= REPACK_MIN_GARBAGE]
            fig.packs_deleted += len(empty)
            if not dry_run:
                self._update(c, mid, t.chunks.c.chunk_id, revive, condemned_ns=None)
                self._update(c, mid, t.chunks.c.chunk_id, condemn, condemned_ns=now)
                for i in range(0, len(sweep), 500):
                    c.execute(sa.delete(t.chunks).where(
                        t.chunks.c.machine_id == mid, t.chunks.c.chunk_id.in_([r.chunk_id for r in
                                                                             sweep[i:i + 500]])))
                if condemn or sweep:
                    bump_chunk_epoch(c, mid)
                self._update(c, mid, t.packs.c.pack_id, empty, deleted_ns=now)
        for pid in sparse:
            fig.packs_rewritten += 1
            fig.packs_deleted += 1
            if not dry_run:
                self._repack(mid, PackId(pid), live[pid])
        if not dry_run:
            self._delete_blobs(mid, fig)

    def _expire(self, mid: MachineId, fig: Figures, dry_run: bool) -> set[str]:
        """Drop the points the machine's retention no longer keeps; returns their ids."""
        rules = self.svc.retention(mid)
        if rules is None:
            return set()
        rp = t.recovery_points.c
        with self.eng.connect() as c:
            points = [rules_of.Point(r.rp_id, r.created_ns, r.status, r.keep_until_ns) for r in c.execute(
                sa.select(rp.rp_id, rp.created_ns, rp.status, rp.keep_until_ns).where(rp.machine_id == mid))]
        kept = rules_of.keep(rules, points, self.clock.now_ns())
        expired = {p.rp_id for p in points} - set(kept)
        fig.points_expired += len(expired)
        if expired and not dry_run:
            ids = sorted(expired)
            with self.eng.begin() as c:
                for i in range(0, len(ids), 500):
                    c.execute(sa.delete(t.recovery_points).where(rp.machine_id == mid, rp.rp_id.in_(ids[i:i + 500])))
                    c.execute(sa.delete(t.point_refs).where(t.point_refs.c.rp_id.in_(ids[i:i + 500])))
        return expired

    @staticmethod
    def _referenced(c: sa.Connection, mid: MachineId, expired: set[str]) -> set[bytes]:
        """Every chunk id a remaining point of the machine references (read under the machine's lock, so a point
        committed a moment ago counts)."""
        rp = t.recovery_points.c
        out: set[bytes] = set()
        for r in c.execute(sa.select(rp.rp_id, t.point_refs.c.refs).join_from(
                t.recovery_points, t.point_refs, rp.rp_id == t.point_refs.c.rp_id).where(rp.machine_id == mid)):
            if r.rp_id in expired:  # a dry run: as if they were gone
                continue
            blob = bytes(r.refs)
            out.update(blob[i:i + 32] for i in range(0, len(blob), 32))
        return out

    @staticmethod
    def _update(c: sa.Connection, mid: MachineId, key: sa.ColumnElement[object], ids: list[bytes] | list[str],
                **values: int | None) -> None:
        table = t.chunks if key is t.chunks.c.chunk_id else t.packs
        for i in range(0, len(ids), 500):
            c.execute(sa.update(table).where(table.c.machine_id == mid, key.in_(ids[i:i + 500])).values(**values))

    def _repack(self, mid: MachineId, old: PackId, live: list[_Chunk]) -> None:
        """Copy the live sealed chunks of `old` into a new pack, point the index at it, then drop `old`."""
        data = self.blobs.get(pack_name(mid, old))
        chunks = sorted(live, key=lambda r: r.offset)
        if packfmt.pack_id(data) != old:
            log.warning("pack %s of machine %s does not match its hash; left as it is", old[:16], mid[:8])
            return
        new, packed, entries = packfmt.repack([(ChunkId(r.chunk_id), r.kind,
                                                memoryview(data)[r.offset:r.offset + r.length]) for r in chunks])
        self.blobs.put(pack_name(mid, new), packed)  # blob first: the index never names a pack not stored
        now = self.clock.now_ns()
        with self.eng.begin() as c:
            lock_machine(c, mid)
            c.execute(t.insert_ignore(t.packs, c.dialect.name).values(
                machine_id=mid, pack_id=new, size=len(packed), created_ns=now))
            ch = t.chunks.c
            for e in entries:
                c.execute(sa.update(t.chunks).where(ch.machine_id == mid, ch.chunk_id == e.chunk_id,
                                                    ch.pack_id == old).values(pack_id=new, offset=e.offset))
            if not c.execute(sa.select(sa.func.count()).select_from(t.chunks).where(
                    ch.machine_id == mid, ch.pack_id == old)).scalar_one():
                c.execute(sa.update(t.packs).where(t.packs.c.machine_id == mid, t.packs.c.pack_id == old)
                          .values(deleted_ns=now))

    def _delete_blobs(self, mid: MachineId, fig: Figures) -> None:
        """Remove the blobs of packs dropped at least `grace_ns` ago: catalog row first, then the blob."""
        cutoff = self.clock.now_ns() - self.grace_ns
        p = t.packs.c
        with self.eng.begin() as c:
            lock_machine(c, mid)
            doomed = [(r.pack_id, r.size) for r in c.execute(sa.select(p.pack_id, p.size).where(
                p.machine_id == mid, p.deleted_ns.is_not(None), p.deleted_ns <= cutoff))]
            for i in range(0, len(doomed), 500):
                c.execute(sa.delete(t.packs).where(p.machine_id == mid,
                                                   p.pack_id.in_([pid for pid, _ in doomed[i:i + 500]])))
        for pid, size in doomed:
            with contextlib.suppress(FileNotFoundError):
                self.blobs.delete(pack_name(mid, pid))
            fig.blobs_deleted += 1
            fig.blob_bytes_freed += size
