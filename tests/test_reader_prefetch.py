"""Restore's reader sends the next pack range ahead on a background thread: what it returns must be exactly
what was backed up, across window boundaries (chunks straddling two windows) and large spans alike."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from safehold.agent.home import AgentHome
from safehold.agent.reader import ChunkReader
from safehold.agent.registration import open_keys
from safehold.errors import SafeholdError
from safehold.formats import tree
from safehold.formats.chunks import CDC_MAX, Sealer
from safehold.model import CHUNK_DATA, MachineId
from safehold.vault.service import VaultService

from conftest import Cli


def _tree(src: Path) -> None:
    rng = random.Random(6)
    for d in range(12):
        sub = src / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(250):  # about 9 MiB of incompressible small files: several 4 MiB windows
            (sub / f"f{i}").write_bytes(rng.randbytes(rng.randrange(1, 6000)))
    (src / "big.bin").write_bytes(rng.randbytes(40 * 1024 * 1024))  # spans of up to 16 MiB


def _open(cli: Cli) -> tuple[VaultService, MachineId, Sealer]:
    reg = AgentHome(cli.home).load()
    keys = open_keys(reg, (cli.home / "passphrase").read_text().strip())
    return VaultService.open_folder(Path(reg.vault_url.removeprefix("file://"))), MachineId(reg.machine_id), \
        Sealer(keys)


def test_prefetching_reader_returns_every_file_as_backed_up(registered: Cli, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    _tree(src)
    registered.ok("backup", src)
    vault, machine, sealer = _open(registered)
    try:
        reads: list[tuple[str, int]] = []
        real_read = vault.read

        def counting_read(*args: object) -> bytes:
            data = real_read(*args)  # type: ignore[arg-type]
            reads.append((threading.current_thread().name, len(data)))
            return data

        monkeypatch.setattr(vault, "read", counting_read)
        rp = vault.recovery_points(machine)[-1]
        reader = ChunkReader(vault, machine, sealer, prefetch=True)
        try:
            reader.preload(vault.refs(machine, rp.rp_id))
            checked = 0
            for path, e in reader.walk(rp.root):
                if e.type != tree.FILE or not e.size:
                    continue
                data = b"".join(reader.read_many(e.chunks or [], CHUNK_DATA))
                assert data == Path("/" + path.decode()).read_bytes(), path
                checked += 1
        finally:
            reader.close()
        assert checked == 12 * 250 + 1
        ahead = [n for name, n in reads if name.startswith("safehold-fetch")]
        assert len(ahead) * 2 >= len(reads) - 1, f"few pack ranges were requested ahead: {reads}"
        packs = sum(size for _, size in vault.packs(machine))
        assert sum(n for _, n in reads) < 1.3 * packs, "ranges sent ahead were read again"
    finally:
        vault.close()


def test_damaged_range_sent_ahead_fails_only_its_chunk(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    registered.ok("backup", src)
    vault, machine, sealer = _open(registered)
    try:
        rp = vault.recovery_points(machine)[-1]
        reader = ChunkReader(vault, machine, sealer, prefetch=True)
        files = [(p, e) for p, e in reader.walk(rp.root) if e.type == tree.FILE and e.size and p.endswith(b"/f7")]
        reader.close()
        # damage the chunk of the fifth small file in pack order, inside a window that is read ahead
        reader = ChunkReader(vault, machine, sealer, prefetch=True)
        reader.preload(vault.refs(machine, rp.rp_id))
        victim_path, victim = files[5]
        loc = reader.location((victim.chunks or [])[0])
        real_read = vault.read

        def damaging_read(m: MachineId, pack_id: str, offset: int, length: int) -> bytes:
            data = bytearray(real_read(m, pack_id, offset, length))  # type: ignore[arg-type]
            at = loc.offset + 20 - offset
            if pack_id == loc.pack_id and 0 <= at < len(data):
                data[at] ^= 0xFF
            return bytes(data)

        vault.read = damaging_read  # type: ignore[method-assign,assignment]
        try:
            ok = 0
            for path, e in files:
                if path == victim_path:
                    with pytest.raises(SafeholdError) as exc:
                        b"".join(reader.read_many(e.chunks or [], CHUNK_DATA))
                    assert exc.value.spec.code == "IntegrityError"
                else:
                    assert b"".join(reader.read_many(e.chunks or [], CHUNK_DATA)) == \
                        Path("/" + path.decode()).read_bytes()
                    ok += 1
            assert ok == len(files) - 1
        finally:
            reader.close()
    finally:
        vault.close()


def test_read_ahead_serves_a_restore_that_skips_items_and_stays_in_its_budget(registered: Cli,
                                                                             tmp_path: Path) -> None:
    """The restore asks for a subsequence of what the read-ahead walks (it skips items already at the target,
    folders it could not make): every item it asks for is the right one, and what waits stays bounded."""
    from safehold.agent.readahead import ReadAhead
    from safehold.agent.restore import _select

    src = tmp_path / "src"
    _tree(src)
    registered.ok("backup", src)
    vault, machine, sealer = _open(registered)
    try:
        rp = vault.recovery_points(machine)[-1]
        reader = ChunkReader(vault, machine, sealer, prefetch=True)
        reader.preload(vault.refs(machine, rp.rp_id))
        budget = 2 * 1024 * 1024
        ahead = ReadAhead(reader, rp.root, None, _select, budget=budget)
        largest = 0
        asked = 0

        def visit(tid: bytes, prefix: bytes, depth: int) -> None:
            nonlocal largest, asked
            for index, e in enumerate(ahead.listing(tid)):
                largest = max(largest, ahead._bytes)
                path = prefix + b"/" + e.name
                if e.type == tree.DIR and e.subtree:
                    if e.name != b"d3":  # a folder the restore could not make: nothing below it is asked for
                        visit(e.subtree, path, depth + 1)
                elif e.type == tree.FILE and e.chunks and index % 3 == 0:  # the rest "already at the target"
                    got = b"".join(ahead.data(tid, index, e.chunks))
                    assert got == Path(path.decode()).read_bytes(), path
                    asked += 1

        try:
            visit(rp.root, b"", 0)
        finally:
            ahead.close()
            reader.close()
        assert asked > 11 * 250 // 3
        # the budget, plus the one item (a chunk, or a listing) that may pass it
        assert largest <= budget + CDC_MAX + 64 * 1024
    finally:
        vault.close()
