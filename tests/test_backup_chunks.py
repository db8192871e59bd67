"""Large files are read and cut block by block: the chunks must be exactly those of one pass over the file,
or dedup against earlier backups (and other tools' expectations of stable chunking) would break.
"""

from __future__ import annotations

import random
from pathlib import Path

from safehold.agent import backup
from safehold.agent.backup import BackupEngine
from safehold.agent.checksums import ChecksumStore
from safehold.agent.home import AgentHome, CacheFolder
from safehold.agent.reader import ChunkReader
from safehold.agent.registration import open_keys, register
from safehold.formats import chunks, tree
from safehold.formats.chunks import Sealer
from safehold.model import MachineId
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
        one_pass = [chunks.chunk_id(keys, c) for c in chunks.cut(chunks.chunker(keys), contents[name])]
        assert e.chunks == one_pass, name
        if len(contents[name]) >= backup.READ_BLOCK:
            assert len(one_pass) > 2
        seen += 1
    assert seen == len(sizes)
