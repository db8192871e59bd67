"""Large files are read and cut block by block: the chunks must be exactly those of one pass over the file,
or dedup against earlier backups (and other tools' expectations of stable chunking) would break.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any, cast

from safehold.agent import backup
from safehold.agent.backup import BackupEngine
from safehold.agent.checksums import ChecksumStore
from safehold.agent.home import AgentHome, CacheFolder
from safehold.agent.reader import ChunkReader
from safehold.agent.registration import open_keys, register
from safehold.formats import chunks, pack, tree
from safehold.formats.chunks import Sealer
from safehold.model import CHUNK_DATA, MachineId, PackEntry, PackId
from safehold.ports import VaultClient
from safehold.vault.service import VaultService

from conftest import PASSPHRASE


def test_block_wise_cutting_gives_the_chunks_of_one_pass(tmp_path: Path) -> None:
    rng = random.Random(3)
    src = tmp_path / "src"
    src.mkdir()
    # Sizes at and around the read block, several blocks long; random bytes from a small alphabet, so the data
    # also compresses.
    table = bytes(b"abcdefgh\n "[i % 10] for i in range(256))
    sizes = [backup.READ_BLOCK - 1, backup.READ_BLOCK, backup.READ_BLOCK + 1, 2 * backup.READ_BLOCK + 12345,
             chunks.SMALL_FILE + 1, 3 * backup.READ_BLOCK + 777]
    contents = {}
    for i, n in enumerate(sizes):
        data = rng.randbytes(n).translate(table)
        (src / f"f{i}").write_bytes(data)
        contents[f"f{i}".encode()] = data

    svc = VaultService.init_folder(tmp_path / "vault")
    creds = tmp_path / "c.vaultcredentials"
    creds.write_bytes(svc.issue_credentials().encode())
    reg = register(AgentHome(tmp_path / "agent"), creds, PASSPHRASE, lambda c, t: svc)
    keys = open_keys(reg, PASSPHRASE)
    machine = MachineId(reg.machine_id)
    store = ChecksumStore(CacheFolder(Path(reg.cache_folder)).checksum_store, keys.key_id)
    result = BackupEngine(svc, machine, keys, store, lambda e: None).run([str(src)])
    store.close()

    seen = 0
    for path, e in ChunkReader(svc, machine, Sealer(keys)).walk(result.recovery_point.root):
        name = path.rsplit(b"/", 1)[-1]
        if e.type != tree.FILE or name not in contents:
            continue
        pieces = list(chunks.cut(chunks.chunker(keys), contents[name]))
        one_pass = [chunks.chunk_id(keys, c) for c in pieces]
        assert e.chunks == one_pass, name
        if len(contents[name]) >= 2 * backup.READ_BLOCK:  # several blocks: some chunk crosses a block boundary
            ends = list(itertools.accumulate(len(c) for c in pieces))
            assert any(start // backup.READ_BLOCK != (end - 1) // backup.READ_BLOCK
                       for start, end in zip([0, *ends], ends, strict=False)), name
        seen += 1
    assert seen == len(sizes)


class _KeepsViews:
    """A vault that keeps what put_pack was given (a view of the agent's pack buffer) and stores a copy."""

    def __init__(self, inner: VaultService) -> None:
        self.inner = inner
        self.kept: list[tuple[str, memoryview | bytes, bytes]] = []

    def put_pack(self, machine_id: MachineId, session: str, pack_id: PackId, data: bytes | memoryview,
                 entries: list[PackEntry]) -> None:
        self.kept.append((pack_id, memoryview(data), bytes(data)))  # a view of its own, as a driver would take
        self.inner.put_pack(machine_id, session, pack_id, bytes(data), entries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_pack_buffers_are_filled_again_only_when_nobody_sees_them(tmp_path: Path) -> None:
    """The upload thread hands a stored pack's buffer back for the next pack, but only once no view of it is
    left: a vault that keeps the view it was given still sees every pack as it was sent. Then a vault that
    keeps nothing: the buffers are reused and every pack still matches its id and restores."""
    rng = random.Random(5)
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}": rng.randbytes(3 * 1024 * 1024 + i) for i in range(12)}  # incompressible: ~5 packs
    for name, data in files.items():
        (src / name).write_bytes(data)
    svc = VaultService.init_folder(tmp_path / "vault")
    creds = tmp_path / "c.vaultcredentials"
    creds.write_bytes(svc.issue_credentials().encode())
    reg = register(AgentHome(tmp_path / "agent"), creds, PASSPHRASE, lambda c, t: svc)
    keys = open_keys(reg, PASSPHRASE)
    machine = MachineId(reg.machine_id)
    keeper = _KeepsViews(svc)
    store = ChecksumStore(CacheFolder(Path(reg.cache_folder)).checksum_store, keys.key_id)
    result = BackupEngine(cast(VaultClient, keeper), machine, keys, store, lambda e: None).run([str(src)])
    assert result.recovery_point.stats.packs_uploaded >= 4
    for pack_id, view, sent in keeper.kept:
        assert bytes(view) == sent and pack.pack_id(view) == pack_id, "a pack buffer was filled while seen"

    for name in files:  # new data for a second run, on the plain vault
        data = rng.randbytes(len(files[name]))
        (src / name).write_bytes(data)
        files[name] = data
    result = BackupEngine(svc, machine, keys, store, lambda e: None).run([str(src)])
    store.close()
    assert result.recovery_point.stats.packs_uploaded >= 4
    for pid, _size in svc.packs(machine):
        assert pack.pack_id(svc.read_pack(machine, pid)) == pid
    reader = ChunkReader(svc, machine, Sealer(keys))
    got = {path.rsplit(b"/", 1)[-1].decode(): b"".join(reader.read(c, CHUNK_DATA) for c in e.chunks or [])
           for path, e in reader.walk(result.recovery_point.root) if e.type == tree.FILE}
    assert got == files
