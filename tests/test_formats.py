"""Property and tamper tests for the byte formats: chunking, sealing, packs, trees, keys, credentials."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.errors import SafeholdError
from safehold.formats import chunks, keys, pack, tree
from safehold.formats import credentials as credfmt
from safehold.formats.keys import MachineKeys
from safehold.model import CHUNK_DATA, CHUNK_TREE, ChunkId

KEYS = MachineKeys.from_master(bytes(range(32)))
SEALER = chunks.Sealer(KEYS)


def _data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000), st.sampled_from([CHUNK_DATA, CHUNK_TREE]))
def test_seal_open_round_trip(data: bytes, kind: int) -> None:
    cid = chunks.chunk_id(KEYS, data, kind)
    assert SEALER.open(kind, cid, SEALER.seal(kind, cid, data)) == data


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.data())
def test_any_flipped_bit_is_detected(data: bytes, draw: st.DataObject) -> None:
    cid = chunks.chunk_id(KEYS, data)
    blob = bytearray(SEALER.seal(CHUNK_DATA, cid, data))
    i = draw.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= 1 << draw.draw(st.integers(0, 7))
    with pytest.raises(SafeholdError) as exc:
        SEALER.open(CHUNK_DATA, cid, bytes(blob))
    assert exc.value.spec.code == "IntegrityError"


def test_chunk_bound_to_id_and_kind() -> None:
    a, b = b"alpha" * 100, b"beta" * 100
    ida, idb = chunks.chunk_id(KEYS, a), chunks.chunk_id(KEYS, b)
    blob = SEALER.seal(CHUNK_DATA, ida, a)
    for kind, cid in ((CHUNK_DATA, idb), (CHUNK_TREE, ida)):
        with pytest.raises(SafeholdError):
            SEALER.open(kind, cid, blob)


def test_compression_only_when_it_helps() -> None:
    text = b"the same line again\n" * 5000
    noise = os.urandom(100_000)
    assert len(SEALER.seal(CHUNK_DATA, chunks.chunk_id(KEYS, text), text)) < len(text) // 10
    assert len(SEALER.seal(CHUNK_DATA, chunks.chunk_id(KEYS, noise), noise)) == len(noise) + chunks.OVERHEAD


def test_ids_are_keyed() -> None:
    other = MachineKeys.from_master(bytes(32))
    assert chunks.chunk_id(KEYS, b"x") != chunks.chunk_id(other, b"x")


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 6 * 1024 * 1024))
def test_chunk_boundaries_cover_input_within_bounds(seed: int, n: int) -> None:
    data = _data(seed, n)
    parts = [bytes(p) for p in chunks.cut(chunks.chunker(KEYS), data)]
    assert b"".join(parts) == data
    if n > chunks.SMALL_FILE:
        assert all(chunks.CDC_MIN <= len(p) <= chunks.CDC_MAX for p in parts[:-1])
        assert len(parts[-1]) <= chunks.CDC_MAX


def test_boundaries_resynchronise_after_an_insert() -> None:
    data = _data(7, 12 * 1024 * 1024)
    cdc = chunks.chunker(KEYS)
    before = {chunks.chunk_id(KEYS, p) for p in chunks.cut(cdc, data)}
    edited = data[:3_000_000] + b"inserted bytes" + data[3_000_000:]
    after = [chunks.chunk_id(KEYS, p) for p in chunks.cut(cdc, edited)]
    shared = sum(1 for c in after if c in before)
    assert shared >= len(after) - 3, (shared, len(after))


def test_chunker_seed_is_per_key() -> None:
    data = _data(3, 8 * 1024 * 1024)
    a = [len(p) for p in chunks.cut(chunks.chunker(KEYS), data)]
    b = [len(p) for p in chunks.cut(chunks.chunker(MachineKeys.from_master(bytes(32))), data)]
    assert a != b


def _pack(n: int = 5) -> tuple[str, bytes, list]:
    builder = pack.PackBuilder()
    for i in range(n):
        data = _data(i, 1000 + i)
        cid = chunks.chunk_id(KEYS, data)
        builder.add(cid, CHUNK_DATA, SEALER.seal(CHUNK_DATA, cid, data))
    return builder.finish(SEALER)


def test_pack_round_trip_and_id() -> None:
    pid, data, entries = _pack()
    assert pid == pack.pack_id(data)
    assert pack.read_entries(data, SEALER) == entries
    for e in entries:
        assert len(SEALER.open(CHUNK_DATA, e.chunk_id, data[e.offset:e.offset + e.length])) >= 1000


@pytest.mark.parametrize("where", ["header", "middle", "trailer", "footer"])
def test_pack_tamper_detected(where: str) -> None:
    pid, data, entries = _pack()
    raw = bytearray(data)
    pos = {"header": 1, "middle": entries[2].offset + 20, "trailer": len(raw) - 20, "footer": len(raw) - 2}[where]
    raw[pos] ^= 0x40
    assert pack.pack_id(bytes(raw)) != pid
    if where == "middle":
        e = entries[2]
        with pytest.raises(SafeholdError):
            SEALER.open(CHUNK_DATA, e.chunk_id, bytes(raw[e.offset:e.offset + e.length]))
    else:
        with pytest.raises(SafeholdError):
            pack.read_entries(bytes(raw), SEALER)


entry_st = st.builds(
    tree.Entry,
    name=st.binary(min_size=1, max_size=40).filter(
        lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")),
    type=st.sampled_from(sorted(tree.TYPES)),
    mode=st.integers(0, 0o7777), uid=st.integers(0, 2**32 - 1), gid=st.integers(0, 2**32 - 1),
    mtime_ns=st.integers(-(2**63), 2**63 - 1), size=st.integers(0, 2**50),
    target=st.none() | st.binary(max_size=100),
    xattrs=st.none() | st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=50)), max_size=3),
    extents=st.none() | st.lists(st.tuples(st.integers(0, 2**40), st.integers(1, 2**30)), max_size=4),
    chunks=st.none() | st.lists(st.binary(min_size=32, max_size=32), max_size=4),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(entry_st, max_size=12, unique_by=lambda e: e.name))
def test_tree_round_trip(entries: list[tree.Entry]) -> None:
    assert tree.decode(tree.encode(list(entries))) == sorted(entries, key=lambda e: e.name)


def test_tree_rejects_bad_names() -> None:
    bad = tree.Entry(name=b"a/b", type="f", mode=0o644, uid=0, gid=0, mtime_ns=0)
    with pytest.raises(SafeholdError):
        tree.decode(tree.encode([bad]))
    with pytest.raises(SafeholdError):
        tree.decode(b"\x93garbage")


def test_key_wrap_unwrap_and_wrong_passphrase() -> None:
    k = MachineKeys.generate()
    wrapped = keys.wrap(k, "a passphrase of 16+ chars")
    assert keys.unwrap(wrapped, "a passphrase of 16+ chars").master == k.master
    with pytest.raises(SafeholdError) as exc:
        keys.unwrap(wrapped, "another passphrase 16+")
    assert exc.value.spec.code == "WrongPassphrase"


@pytest.mark.parametrize("damage", [b"", b"{}", b"not json", b'{"format": "safehold-key"}'])
def test_damaged_key_file_is_34506(damage: bytes) -> None:
    with pytest.raises(SafeholdError) as exc:
        keys.unwrap(damage, "a passphrase of 16+ chars")
    assert exc.value.spec.id_text == "34506"


@pytest.mark.parametrize(("pw", "ok"), [("x" * 15, False), ("x" * 16, True), ("é" * 20, False),
                                        ("tab\tinside-16-chars", False), ("16 chars exactly", True)])
def test_passphrase_rules(pw: str, ok: bool) -> None:
    if ok:
        keys.check_passphrase(pw)
    else:
        with pytest.raises(SafeholdError):
            keys.check_passphrase(pw)


def _creds() -> credfmt.VaultCredentials:
    return credfmt.VaultCredentials("v" * 32, "vault", "file:///tmp/v", None, "c" * 32, os.urandom(32), 1, 2)


def test_credentials_round_trip_and_rules() -> None:
    c = _creds()
    assert credfmt.parse("x.vaultcredentials", c.encode()) == c
    assert credfmt.parse("X.VaultCredentials", c.encode()) == c
    cases = [("x.json", c.encode()), ("x.vaultcredentials", c.encode()[:-30]),
             ("x.vaultcredentials", b"\xff\xfe"), ("x.vaultcredentials", c.encode().replace(b"file", b"ftp"))]
    for name, data in cases:
        with pytest.raises(SafeholdError) as exc:
            credfmt.parse(name, data)
        assert exc.value.spec.id_text == "34513"


def test_chunk_id_type() -> None:
    assert isinstance(chunks.chunk_id(KEYS, b""), bytes) and len(ChunkId(chunks.chunk_id(KEYS, b""))) == 32


def test_tree_and_data_ids_never_collide() -> None:
    empty_tree = tree.encode([])
    assert chunks.chunk_id(KEYS, empty_tree, CHUNK_TREE) != chunks.chunk_id(KEYS, empty_tree, CHUNK_DATA)
    cid = chunks.chunk_id(KEYS, empty_tree, CHUNK_TREE)
    assert SEALER.open(CHUNK_TREE, cid, SEALER.seal(CHUNK_TREE, cid, empty_tree)) == empty_tree


def test_hostile_numbers_and_nesting_are_clean_errors() -> None:
    good = _creds().encode().decode()
    for bad in (good.replace('"issued_ns": 1', '"issued_ns": Infinity'), "[" * 100_000 + "]" * 100_000):
        with pytest.raises(SafeholdError) as exc:
            credfmt.parse("x.vaultcredentials", bad.encode())
        assert exc.value.spec.id_text == "34513"
    wrapped = keys.wrap(MachineKeys.generate(), "a passphrase of 16+ chars").decode()
    with pytest.raises(SafeholdError) as kexc:
        keys.unwrap(wrapped.replace('"t": 3', '"t": Infinity').encode(), "a passphrase of 16+ chars")
    assert kexc.value.spec.id_text == "34506"
    nul = tree.Entry(name=b"a\0b", type="f", mode=0o644, uid=0, gid=0, mtime_ns=0)
    with pytest.raises(SafeholdError):
        tree.decode(tree.encode([nul]))


def test_incompressible_chunks_are_stored_as_they_are_and_compressible_ones_compressed() -> None:
    rnd = _data(11, 1024 * 1024)
    text = b"def value(self): return self.items[index]\n" * 30_000
    # random data with one compressible stretch in the middle: the middle sample finds it
    mixed = rnd[:400_000] + text[:300_000] + rnd[400_000:700_000]
    for data, compressed in ((rnd, False), (text, True), (mixed, True), (rnd[:1000], False)):
        cid = chunks.chunk_id(KEYS, data)
        blob = SEALER.seal(CHUNK_DATA, cid, data)
        assert (len(blob) < len(data)) is compressed
        assert SEALER.open(CHUNK_DATA, cid, blob) == data
