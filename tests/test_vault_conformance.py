"""One conformance suite for `ports.VaultClient`: the embedded vault in-process and the vault server over HTTPS,
each on a SQLite and a PostgreSQL catalog. What the agent relies on must hold the same way on every one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from safehold.agent.remote import RemoteVault
from safehold.agent.throttle import Limits, PacedVault, Pacer
from safehold.errors import SafeholdError
from safehold.formats import keys as keyfmt
from safehold.formats.chunks import Sealer, chunk_id
from safehold.formats.keys import MachineKeys
from safehold.formats.pack import PackBuilder
from safehold.formats.policy import Retention
from safehold.model import CHUNK_DATA, BackupStats, ChunkId, JobRecord, JobStatus, MachineId, MachineInfo
from safehold.ports import VaultClient
from safehold.vault import service as vault_service
from safehold.vault.housekeeping import Housekeeping
from safehold.vault.service import VaultService

from conftest import FakeClock
from vaultserver import VaultServer, make_vault

PASSPHRASE = "conformance passphrase 2026"


@dataclass
class Subject:
    vault: VaultClient  # as the registered machine
    anonymous: VaultClient  # for registration
    svc: VaultService  # the same vault, for issuing credentials
    machine_id: MachineId
    keys: MachineKeys


def _machine(hostname: str = "conformance-host") -> MachineInfo:
    return MachineInfo(MachineId(uuid.uuid4().hex), hostname, "os-id", "0.1.0")


@pytest.fixture(params=["embedded", "http"])
def subject(request: pytest.FixtureRequest, tmp_path: Path, catalog_url: str | None) -> Iterator[Subject]:
    svc = make_vault(tmp_path / "vault", catalog_url)
    try:
        yield from _subject(request.param, tmp_path, svc)
    finally:
        svc.close()


def _subject(kind: str, tmp_path: Path, svc: VaultService) -> Iterator[Subject]:
    keys = MachineKeys.generate()
    machine = _machine()
    if kind == "embedded":
        svc.register(svc.issue_credentials(), machine, keyfmt.wrap(keys, PASSPHRASE), keys.key_verifier, None)
        yield Subject(svc, svc, svc, machine.machine_id, keys)
        return
    with VaultServer(tmp_path / "vault") as server:
        anonymous = RemoteVault(server.url, server.fingerprint, retry_base=0)
        token = anonymous.register(svc.issue_credentials(), machine, keyfmt.wrap(keys, PASSPHRASE),
                                   keys.key_verifier, None)
        vault = RemoteVault(server.url, server.fingerprint, token=token, hostname=machine.hostname, retry_base=0)
        try:
            yield Subject(vault, anonymous, svc, machine.machine_id, keys)
        finally:
            vault.close()
            anonymous.close()


def _pack(keys: MachineKeys, *payloads: bytes) -> tuple[str, bytes, list, list[ChunkId]]:
    sealer = Sealer(keys)
    builder = PackBuilder()
    ids = []
    for p in payloads:
        cid = chunk_id(keys, p)
        builder.add(cid, CHUNK_DATA, sealer.seal(CHUNK_DATA, cid, p))
        ids.append(cid)
    pid, data, entries = builder.finish(sealer)
    return pid, data, entries, ids


def test_info_names_the_vault(subject: Subject) -> None:
    info = subject.vault.info()
    assert info.vault_id == subject.svc.vault_id
    assert info.max_machines == 50


def test_wrapped_key_comes_back_and_opens_with_the_passphrase(subject: Subject) -> None:
    wrapped = subject.vault.wrapped_key(subject.machine_id)
    assert keyfmt.unwrap(wrapped, PASSPHRASE).key_id == subject.keys.key_id


def test_pack_upload_index_read_and_commit(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    session = v.begin_session(mid)
    pid, data, entries, ids = _pack(subject.keys, b"alpha" * 1000, b"beta" * 3000)
    v.put_pack(mid, session, pid, data, entries)
    v.put_pack(mid, session, pid, data, entries)  # a retried upload is a no-op
    listed = list(v.known_chunks(mid))
    assert listed == sorted(set(ids))  # ascending: the agent keeps the listing as it comes and checks the order
    assert v.packs(mid) == [(pid, len(data))]
    assert v.read_pack(mid, pid) == data
    located = v.locate(mid, [*ids, ChunkId(b"\0" * 32)])
    assert set(located) == set(ids)
    for e in entries:
        loc = located[e.chunk_id]
        assert (loc.pack_id, loc.offset, loc.length) == (pid, e.offset, e.length)
        blob = v.read(mid, pid, loc.offset, loc.length)
        assert blob == data[e.offset:e.offset + e.length]
    assert dict(v.index(mid)) == located

    stats = BackupStats(files=2, bytes_scanned=17000, duration_s=0.5)
    rp = v.commit(mid, session, ids[0], JobStatus.COMPLETED, stats, ids, b"sealed meta")
    again = v.commit(mid, session, ids[0], JobStatus.COMPLETED, stats, ids, b"sealed meta")
    assert again.rp_id == rp.rp_id  # a commit whose answer was lost may be sent again
    [listed] = v.recovery_points(mid)
    assert (listed.rp_id, listed.root, listed.status, listed.stats, listed.sealed_meta) == \
        (rp.rp_id, ids[0], JobStatus.COMPLETED, stats, b"sealed meta")
    assert sorted(v.refs(mid, rp.rp_id)) == sorted(ids)


def test_damaged_pack_is_refused(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    session = v.begin_session(mid)
    pid, data, entries, _ = _pack(subject.keys, b"gamma" * 500)
    broken = bytearray(data)
    broken[20] ^= 1
    with pytest.raises(SafeholdError) as exc:
        v.put_pack(mid, session, pid, bytes(broken), entries)
    assert exc.value.spec.code == "IntegrityError"
    assert v.packs(mid) == []


@pytest.fixture(params=["in-batches", "one-pass"])
def commit_check(request: pytest.FixtureRequest, subject: Subject, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways a commit checks its chunks: IN queries for a few ids, one pass over the index for many (here
    forced with a threshold of 1; the embedded vault only, the served one runs in its own process)."""
    if request.param == "one-pass":
        if not isinstance(subject.vault, VaultService):
            pytest.skip("the threshold can only be lowered in this process")
        monkeypatch.setattr(vault_service, "SCAN_FROM", 1)


@pytest.mark.usefixtures("commit_check")
def test_commit_with_unknown_chunk_is_refused(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    session = v.begin_session(mid)
    with pytest.raises(SafeholdError) as exc:
        v.commit(mid, session, ChunkId(b"\1" * 32), JobStatus.COMPLETED, BackupStats(), [], b"")
    assert exc.value.spec.code == "ChunkMissing"
    assert v.recovery_points(mid) == []


def test_unknown_recovery_point_and_forget(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    with pytest.raises(SafeholdError) as exc:
        v.refs(mid, "0" * 32)
    assert exc.value.spec.code == "RecoveryPointNotFound"
    session = v.begin_session(mid)
    pid, data, entries, ids = _pack(subject.keys, b"delta" * 100)
    v.put_pack(mid, session, pid, data, entries)
    v.abort_session(mid, session)
    assert v.forget_chunks(mid, ids) == 1
    assert list(v.known_chunks(mid)) == []


@pytest.mark.usefixtures("commit_check")
def test_a_commit_after_removals_checks_every_reference_again(subject: Subject) -> None:
    """The chunk epoch counts removals from the index, not additions. A commit whose references a point of the
    current epoch holds needs no look at the index; once a chunk was forgotten, the same references are checked
    one by one again and the missing chunk is found."""
    v, mid = subject.vault, subject.machine_id
    epoch = v.chunk_epoch(mid)
    first, (a, b) = _commit(subject, v.begin_session(mid), b"chunk a" * 300, b"chunk b" * 300)
    assert v.chunk_epoch(mid) == epoch  # uploads and commits remove nothing
    again = v.commit(mid, v.begin_session(mid), a, JobStatus.COMPLETED, BackupStats(), [a, b], b"m")
    # a point of this epoch plus one new chunk: the new one is checked, and must be there
    session = v.begin_session(mid)
    pid, data, entries, (c,) = _pack(subject.keys, b"chunk c" * 300)
    v.put_pack(mid, session, pid, data, entries)
    absent = ChunkId(b"\2" * 32)
    with pytest.raises(SafeholdError) as exc:
        v.commit(mid, session, a, JobStatus.COMPLETED, BackupStats(), [a, b, c, absent], b"m")
    assert exc.value.spec.code == "ChunkMissing"
    grown = v.commit(mid, session, a, JobStatus.COMPLETED, BackupStats(), [a, b, c], b"m")
    assert v.forget_chunks(mid, [b]) == 1
    assert v.chunk_epoch(mid) == epoch + 1
    assert v.forget_chunks(mid, [b]) == 0  # nothing removed: the count stays
    assert v.chunk_epoch(mid) == epoch + 1
    for refs in ([a, b], [a, b, c]):  # the references of an earlier point: no longer taken on trust
        with pytest.raises(SafeholdError) as exc:
            v.commit(mid, v.begin_session(mid), a, JobStatus.COMPLETED, BackupStats(), refs, b"m")
        assert exc.value.spec.code == "ChunkMissing"
    later = v.commit(mid, v.begin_session(mid), a, JobStatus.COMPLETED, BackupStats(), [a, c], b"m")
    assert len({first, again.rp_id, grown.rp_id, later.rp_id}) == 4
    assert sorted(v.refs(mid, later.rp_id)) == sorted([a, c])


def test_credentials_work_once_and_only_the_newest(subject: Subject) -> None:
    old = subject.svc.issue_credentials()
    new = subject.svc.issue_credentials()
    keys = MachineKeys.generate()
    wrapped = keyfmt.wrap(keys, PASSPHRASE)
    with pytest.raises(SafeholdError) as exc:
        subject.anonymous.register(old, _machine("other"), wrapped, keys.key_verifier, None)
    assert exc.value.spec.id == 34513 and "newer" in exc.value.text
    subject.anonymous.register(new, _machine("other"), wrapped, keys.key_verifier, None)
    with pytest.raises(SafeholdError) as exc:
        subject.anonymous.register(new, _machine("third"), wrapped, keys.key_verifier, None)
    assert exc.value.spec.id == 34513 and "already used" in exc.value.text


def test_re_registration_needs_the_key_proof(subject: Subject) -> None:
    same = MachineInfo(subject.machine_id, "renamed-host", "os-id", "0.1.0")
    intruder = MachineKeys.generate()
    with pytest.raises(SafeholdError) as exc:
        subject.anonymous.register(subject.svc.issue_credentials(), same, keyfmt.wrap(intruder, PASSPHRASE),
                                   intruder.key_verifier, intruder.auth_key)
    assert exc.value.spec.code == "WrongPassphrase"
    with pytest.raises(SafeholdError):
        subject.anonymous.register(subject.svc.issue_credentials(), same, keyfmt.wrap(intruder, PASSPHRASE),
                                   intruder.key_verifier, None)
    # the machine's own key proves it: the new host name is recorded, the id stays
    k = subject.keys
    subject.anonymous.register(subject.svc.issue_credentials(), same, keyfmt.wrap(k, PASSPHRASE),
                               k.key_verifier, k.auth_key)
    assert {m["machine_id"]: m["hostname"] for m in subject.svc.machines()}[subject.machine_id] == "renamed-host"


def test_another_machine_is_opened_with_a_credentials_file_and_its_key(subject: Subject) -> None:
    other = MachineKeys.generate()
    grantee = _machine("restorer")
    subject.anonymous.register(subject.svc.issue_credentials(), grantee, keyfmt.wrap(other, PASSPHRASE),
                               other.key_verifier, None)
    creds = subject.svc.issue_credentials()
    info, wrapped = subject.vault.recovery_source(creds, subject.machine_id[:8], grantee.machine_id)
    assert info.machine_id == subject.machine_id and info.hostname == "conformance-host"
    assert keyfmt.unwrap(wrapped, PASSPHRASE).key_id == subject.keys.key_id
    with pytest.raises(SafeholdError) as exc:
        subject.vault.grant_recovery(creds, subject.machine_id, grantee.machine_id, other.auth_key)
    assert exc.value.spec.code == "WrongPassphrase"
    token = subject.vault.grant_recovery(creds, subject.machine_id, grantee.machine_id, subject.keys.auth_key)
    assert token.startswith("shr_")
    with pytest.raises(SafeholdError) as exc:
        subject.vault.recovery_source(creds, "conformance-host", grantee.machine_id)
    assert exc.value.spec.id == 34513  # the file was used up by the grant
    with pytest.raises(SafeholdError) as exc:
        subject.vault.recovery_source(subject.svc.issue_credentials(), "no-such-host", grantee.machine_id)
    assert exc.value.spec.code == "InvalidArgument" and "no machine(s) named 'no-such-host'" in exc.value.text


def test_retention_rules_are_stored_per_machine(subject: Subject) -> None:
    from safehold.formats.policy import Retention

    v, mid = subject.vault, subject.machine_id
    assert v.retention(mid) is None
    rules = Retention(daily_days=14, weekly_weeks=8, weekly_days=("sat", "sun"), monthly_months=12,
                      monthly_on="day-last", yearly_years=3, yearly_month="jan", yearly_on="first-mon",
                      timezone="Europe/Prague")
    v.set_retention(mid, rules)
    assert v.retention(mid) == rules
    v.set_retention(mid, Retention(daily_days=7))
    assert v.retention(mid) == Retention(daily_days=7)
    with pytest.raises(SafeholdError) as exc:
        v.set_retention(mid, Retention(daily_days=3))
    assert exc.value.spec.code == "PolicyInvalid"
    assert v.retention(mid) == Retention(daily_days=7)


def test_on_demand_point_carries_its_keep_until(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    session = v.begin_session(mid)
    pid, data, entries, ids = _pack(subject.keys, b"on demand" * 200)
    v.put_pack(mid, session, pid, data, entries)
    until = 1_900_000_000 * 10**9
    rp = v.commit(mid, session, ids[0], JobStatus.COMPLETED, BackupStats(), ids, b"m", keep_until_ns=until)
    assert rp.keep_until_ns == until
    [listed] = v.recovery_points(mid)
    assert listed.keep_until_ns == until
    session = v.begin_session(mid)
    plain = v.commit(mid, session, ids[0], JobStatus.COMPLETED, BackupStats(), ids, b"m")
    assert plain.keep_until_ns is None


# ---- retention and keyless housekeeping with backups running ---------------------------------------------------

def _housekeeping(subject: Subject, days_ahead: float) -> tuple[Housekeeping, FakeClock]:
    """Housekeeping on the subject's catalog with a clock `days_ahead` of the real one (points are stamped by the
    real clock, embedded or served)."""
    clock = FakeClock(time.time_ns() + int(days_ahead * 86_400 * 10**9))
    # Sessions are stamped by the real clock too: the jump ahead must not make the open ones look abandoned.
    return Housekeeping(subject.svc, clock, grace_ns=0, session_ttl_ns=1000 * 86_400 * 10**9), clock


def _commit(subject: Subject, session: str, *payloads: bytes) -> tuple[str, list[ChunkId]]:
    v, mid = subject.vault, subject.machine_id
    pid, data, entries, ids = _pack(subject.keys, *payloads)
    v.put_pack(mid, session, pid, data, entries)
    return v.commit(mid, session, ids[0], JobStatus.COMPLETED, BackupStats(), ids, b"m").rp_id, ids


def _restore(subject: Subject, cid: ChunkId) -> bytes:
    loc = subject.vault.locate(subject.machine_id, [cid])[cid]
    blob = subject.vault.read(subject.machine_id, loc.pack_id, loc.offset, loc.length)
    return Sealer(subject.keys).open(loc.kind, cid, blob)


@pytest.mark.usefixtures("commit_check")
def test_a_backup_running_during_housekeeping_loses_nothing(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    shared = os.urandom(200_000)
    old_rp, (shared_id,) = _commit(subject, v.begin_session(mid), shared)
    newer_rp, _ = _commit(subject, v.begin_session(mid), b"a newer backup" * 100)
    v.set_retention(mid, Retention(daily_days=7))

    # A backup begins and counts on `shared`, which only the old point references ...
    running = v.begin_session(mid)
    assert shared_id in set(v.known_chunks(mid))
    own = b"what the running backup adds" * 50
    pid, data, entries, (own_id,) = _pack(subject.keys, own)
    v.put_pack(mid, running, pid, data, entries)
    # ... the old point expires and housekeeping runs: `shared` is garbage now, but the open session may use it.
    hk, clock = _housekeeping(subject, 30)
    fig = hk.run()
    assert fig is not None and fig.points_expired == 1 and fig.chunks_deleted == 0
    assert [rp.rp_id for rp in v.recovery_points(mid)] == [newer_rp]
    assert shared_id not in set(v.known_chunks(mid))  # a backup beginning now will not count on it
    # The running backup commits a point that references it, and it restores byte for byte.
    rp = v.commit(mid, running, own_id, JobStatus.COMPLETED, BackupStats(), [own_id, shared_id], b"m")
    clock.advance(60)
    fig = hk.run()  # the newer point goes too now (a month old, and a newer good point exists); ours stays whole
    assert fig is not None and fig.points_expired == 1
    assert [p.rp_id for p in v.recovery_points(mid)] == [rp.rp_id]
    assert sorted(v.refs(mid, rp.rp_id)) == sorted([own_id, shared_id])
    assert _restore(subject, shared_id) == shared and _restore(subject, own_id) == own
    assert shared_id in set(v.known_chunks(mid))  # referenced again: no longer condemned
    assert old_rp != newer_rp


def test_garbage_is_freed_once_no_older_session_is_open(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    _commit(subject, v.begin_session(mid), os.urandom(300_000))
    kept_rp, (kept_id,) = _commit(subject, v.begin_session(mid), os.urandom(1000))
    v.set_retention(mid, Retention(daily_days=7))
    slow = v.begin_session(mid)  # an older session holds the garbage back ...
    hk, clock = _housekeeping(subject, 30)
    epoch = v.chunk_epoch(mid)
    fig = hk.run()
    assert fig is not None and fig.points_expired == 1 and fig.chunks_condemned == 1 and fig.chunks_deleted == 0
    assert v.chunk_epoch(mid) == epoch + 1  # a condemned chunk counts as removed
    v.abort_session(mid, slow)  # ... until it ends
    before = sum(size for _, size in subject.svc.blobs.list("packs/"))
    clock.advance(60)
    fig = hk.run()
    assert fig is not None and fig.chunks_deleted == 1 and fig.bytes_deleted > 300_000
    assert v.chunk_epoch(mid) == epoch + 2
    hk.run()
    assert v.chunk_epoch(mid) == epoch + 2  # a run that removes nothing leaves it
    assert fig.packs_deleted >= 1 and fig.blob_bytes_freed > 300_000
    assert sum(size for _, size in subject.svc.blobs.list("packs/")) <= before - 300_000
    assert [p.rp_id for p in v.recovery_points(mid)] == [kept_rp]
    assert _restore(subject, kept_id)
    assert len(v.packs(mid)) == 1


def test_a_condemned_chunk_uploaded_again_takes_the_new_copy(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    content = os.urandom(150_000)
    _, (cid,) = _commit(subject, v.begin_session(mid), content)
    _commit(subject, v.begin_session(mid), b"a newer backup" * 100)
    old_pack = v.locate(mid, [cid])[cid].pack_id
    v.set_retention(mid, Retention(daily_days=7))
    slow = v.begin_session(mid)  # an older session keeps the condemned chunk's row and pack in place
    hk, clock = _housekeeping(subject, 30)
    fig = hk.run()
    assert fig is not None and fig.points_expired == 1 and fig.chunks_condemned == 1 and fig.chunks_deleted == 0
    assert cid not in set(v.known_chunks(mid))
    # A backup that began after the condemnation does not know the chunk and stores it again.
    session = v.begin_session(mid)
    pid, data, entries, _ = _pack(subject.keys, content)
    v.put_pack(mid, session, pid, data, entries)
    assert v.locate(mid, [cid])[cid].pack_id == pid != old_pack
    assert cid in set(v.known_chunks(mid))  # live again: the new row is not condemned
    rp = v.commit(mid, session, cid, JobStatus.COMPLETED, BackupStats(), [cid], b"m")
    v.abort_session(mid, slow)
    clock.advance(60)
    fig = hk.run()  # the old copy's pack may go now; the new copy stays
    assert fig is not None and fig.bytes_deleted < len(content)
    assert cid in set(v.known_chunks(mid))
    assert rp.rp_id in {p.rp_id for p in v.recovery_points(mid)}
    assert _restore(subject, cid) == content


def test_a_machine_whose_backups_fail_keeps_its_last_good_point(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    good, (cid,) = _commit(subject, v.begin_session(mid), b"the last good backup" * 100)
    v.set_retention(mid, Retention(daily_days=7, weekly_weeks=4))
    failed = v.commit(mid, v.begin_session(mid), cid, JobStatus.FAILED, BackupStats(), [cid], b"m")
    hk, _ = _housekeeping(subject, 400)
    fig = hk.run()
    assert fig is not None
    assert {p.rp_id for p in v.recovery_points(mid)} == {good}  # the failed one went, the good one stays
    assert failed.rp_id != good
    assert _restore(subject, cid) == b"the last good backup" * 100


def test_on_demand_point_expires_after_its_date(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    until = time.time_ns() + 40 * 86_400 * 10**9
    pid, data, entries, ids = _pack(subject.keys, b"on demand" * 10)
    s = v.begin_session(mid)
    v.put_pack(mid, s, pid, data, entries)
    on_demand = v.commit(mid, s, ids[0], JobStatus.COMPLETED, BackupStats(), ids, b"m", keep_until_ns=until).rp_id
    v.set_retention(mid, Retention(daily_days=7))
    newest, _ = _commit(subject, v.begin_session(mid), b"scheduled" * 10)
    hk, clock = _housekeeping(subject, 20)
    assert hk.run() is not None
    assert {p.rp_id for p in v.recovery_points(mid)} == {on_demand, newest}
    clock.advance(30 * 86_400)
    assert hk.run() is not None
    assert {p.rp_id for p in v.recovery_points(mid)} == {newest}


def test_job_reports_are_kept_replaced_and_checked(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    first = JobRecord(uuid.uuid4().hex, "backup", "scheduled", 1_000, 2_000, JobStatus.WARNINGS, files=3,
                      bytes=42, warnings=1, recovery_point=uuid.uuid4().hex)
    refused = JobRecord(uuid.uuid4().hex, "backup", "manual", 3_000, 3_000, JobStatus.FAILED, error_id="34528",
                        error_text="another job is running")
    v.report_jobs(mid, [first, refused])
    v.report_jobs(mid, [first])  # a report repeated after a lost answer replaces the row
    assert v.jobs(mid) == [first, refused]
    assert v.jobs(mid, limit=1) == [refused], "the newest jobs"
    for bad in (JobRecord("not-an-id", "backup", "manual", 1, 2, JobStatus.COMPLETED),
                JobRecord(uuid.uuid4().hex, "format-disk", "manual", 1, 2, JobStatus.COMPLETED),
                JobRecord(uuid.uuid4().hex, "backup", "manual", -5, 2, JobStatus.COMPLETED),
                JobRecord(uuid.uuid4().hex, "backup", "manual", 1, 2, JobStatus.FAILED, error_id="<script>")):
        with pytest.raises(SafeholdError) as exc:
            v.report_jobs(mid, [bad])
        assert exc.value.spec.code == "InvalidArgument"
    # another machine cannot overwrite this machine's job
    other = _machine("other-host")
    other_keys = MachineKeys.generate()
    subject.svc.register(subject.svc.issue_credentials(), other, keyfmt.wrap(other_keys, PASSPHRASE),
                         other_keys.key_verifier, None)
    with pytest.raises(SafeholdError):
        subject.svc.report_jobs(other.machine_id, [first])
    assert subject.svc.jobs(other.machine_id) == [] and v.jobs(mid)[0] == first


def test_a_throttled_upload_is_paced_piece_by_piece(subject: Subject) -> None:
    v, mid = subject.vault, subject.machine_id
    now = [1000.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(Limits(8_000_000, 8_000_000), clock=lambda: now[0], sleep=sleep)  # 1 MB/s
    paced = PacedVault(v, pacer)
    session = v.begin_session(mid)
    pid, data, entries, _ids = _pack(subject.keys, os.urandom(3 * 1024 * 1024 + 5))
    paced.put_pack(mid, session, pid, data, entries)
    total = sum(slept)
    if isinstance(v, RemoteVault):  # streamed: waits between the 1 MiB pieces of the one pack
        assert len(slept) == 3 and abs(total - 3 * 1024 * 1024 / 1e6) < 0.01
    else:  # embedded: whole packs are paced, the first one goes at once
        assert slept == []
    assert (pid, len(data)) in v.packs(mid), "the paced pack arrived whole"
    v.abort_session(mid, session)
