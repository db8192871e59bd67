"""The compact id collections a backup holds: the vault's known ids, the references it collects, and the
sorted packed form a commit sends. Each must answer exactly as a set of the same ids would."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.agent import refs as refs_mod
from safehold.agent.known import KnownIds
from safehold.agent.refs import RefLog
from safehold.errors import SafeholdError
from safehold.formats import wire
from safehold.model import JOIN_SLICE, ChunkId, PackedIds, join_ids
from safehold.vault.service import _not_in

ids32 = st.lists(st.binary(min_size=32, max_size=32), max_size=300)


@settings(max_examples=80, deadline=None)
@given(ids32, ids32, st.booleans())
def test_known_ids_answer_as_a_set(have: list[bytes], probes: list[bytes], ordered: bool) -> None:
    distinct = sorted(set(have)) if ordered else list(dict.fromkeys(have))
    for known in (KnownIds(iter(distinct)), KnownIds(PackedIds(have))):
        assert len(known) == len(set(have))
        assert all(cid in known for cid in have)
        assert all((cid in known) == (cid in set(have)) for cid in probes)


def test_known_ids_never_match_across_two_neighbours() -> None:
    """An id made of the end of one listed id and the start of the next lies in the listing's bytes, but at
    no id's place: it is not known."""
    rng = random.Random(7)
    listed = sorted(rng.randbytes(32) for _ in range(5000))
    known = KnownIds(iter(listed))
    data = join_ids(listed)
    straddling = [data[i * 32 + 16:i * 32 + 48] for i in range(len(listed) - 1)]
    assert not any(cid in known for cid in straddling if cid not in set(listed))
    assert all(cid in known for cid in listed)


def test_known_ids_take_ids_added_during_the_backup_and_can_be_emptied() -> None:
    listed = sorted(os.urandom(32) for _ in range(1000))
    known = KnownIds(iter(listed))
    new = os.urandom(32)
    assert new not in known and 5 not in known and b"short" not in known
    known.add(new)
    assert new in known and len(known) == 1001
    known.clear()
    assert len(known) == 0 and new not in known and listed[0] not in known
    with pytest.raises(ValueError):
        KnownIds([b"x" * 31])


@settings(max_examples=60, deadline=None)
@given(ids32, st.binary(min_size=32, max_size=32))
def test_packed_ids_are_sorted_distinct_and_insert_in_place(ids: list[bytes], extra: bytes) -> None:
    packed = PackedIds(ids)
    assert list(packed) == sorted(set(ids)) and len(packed) == len(set(ids))
    assert all(cid in packed for cid in ids)
    grown = packed.with_id(ChunkId(extra))
    assert list(grown) == sorted({*ids, extra})
    assert (grown is packed) == (extra in set(ids))
    assert PackedIds.verified(packed.data).data == packed.data


def test_packed_ids_from_elsewhere_are_checked() -> None:
    a, b = sorted(os.urandom(32) for _ in range(2))
    for bad in (b + a, a + a, a + b[:31]):
        with pytest.raises(ValueError):
            PackedIds.verified(bad)
        with pytest.raises(SafeholdError) as exc:
            wire.sorted_ids(bad)
        assert exc.value.spec.code == "InvalidArgument"
    assert list(wire.sorted_ids(a + b)) == [a, b]


@pytest.mark.parametrize("n", [0, 1, JOIN_SLICE - 1, JOIN_SLICE, JOIN_SLICE + 1, 3 * JOIN_SLICE + 17])
def test_join_ids_in_slices_joins_everything_in_order(n: int) -> None:
    ids = [os.urandom(32) for _ in range(n)]
    assert join_ids(ids) == b"".join(ids)


def test_ref_log_folds_duplicates_and_keeps_every_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny fold threshold the log folds many times; the ids it hands the commit are exactly the
    distinct ids added, sorted, however often each was added."""
    monkeypatch.setattr(refs_mod, "FOLD_FROM", 32 * 50)
    rng = random.Random(3)
    pool = [rng.randbytes(32) for _ in range(400)]
    log = RefLog()
    added = []
    for _ in range(5000):
        cid = rng.choice(pool)
        added.append(cid)
        log.add(cid)
        assert len(log) <= max(100, 2 * len(set(added)))  # folding bounds what is held
    log.update(pool[:10])
    assert list(log.packed()) == sorted(set(added) | set(pool[:10]))
    assert len(log) == 0 and list(log.packed()) == []
    with pytest.raises(ValueError):
        log.add(b"x" * 33)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=400), st.data())
def test_the_commit_finds_exactly_the_ids_a_point_lacks(pool: list[bytes], data: st.DataObject) -> None:
    """The vault's merge of a new point's ids against a point of the current chunk epoch (runs of 64 agreeing
    ids skipped at once) gives what a set difference gives."""
    base = sorted(set(data.draw(st.lists(st.sampled_from(pool), max_size=300)) if pool else []))
    new = sorted(set(data.draw(st.lists(st.sampled_from(pool), max_size=300)) if pool else []))
    got = _not_in(join_ids(base), join_ids(new))
    assert got == [cid for cid in new if cid not in set(base)]


def test_the_commit_merge_skips_agreeing_runs_and_finds_scattered_ids() -> None:
    rng = random.Random(7)
    ids = sorted(rng.randbytes(32) for _ in range(5000))
    base = [cid for i, cid in enumerate(ids) if i % 97]  # every 97th id is new to the point
    assert _not_in(join_ids(base), join_ids(ids)) == ids[::97]
    assert _not_in(join_ids(ids), join_ids(base)) == []
