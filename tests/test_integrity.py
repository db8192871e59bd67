"""Tampering with packs, trees or the index is found by `check` and never restored silently."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import Cli, restored


def _setup(registered: Cli, tmp_path: Path) -> tuple[Path, Path, str]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(bytes(range(256)) * 4000)
    (src / "sub" / "b.txt").write_text("hello " * 1000)
    rp = registered.ok("backup", src, "--json").json_lines()[-1]["recovery_point"]
    return src, tmp_path / "vault", rp


def _db(vault: Path) -> sqlite3.Connection:
    return sqlite3.connect(vault / "catalog.sqlite")


def _flip(vault: Path, pack_id: str, offset: int) -> None:
    path = next((vault / "blobs" / "packs").rglob(pack_id))
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _chunk(vault: Path, kind: int) -> tuple[str, int, int]:
    with _db(vault) as db:
        return db.execute("SELECT pack_id, offset, length FROM chunks WHERE kind = ? ORDER BY length DESC",
                          (kind,)).fetchone()


def test_clean_vault_checks_clean(registered: Cli, tmp_path: Path) -> None:
    _setup(registered, tmp_path)
    r = registered.ok("check", "--read-data", "--json")
    assert r.summary()["problems"] == []


def test_flipped_data_byte_is_found_and_not_restored(registered: Cli, tmp_path: Path) -> None:
    src, vault, rp = _setup(registered, tmp_path)
    pack_id, offset, length = _chunk(vault, 0)
    _flip(vault, pack_id, offset + length // 2)
    r = registered("check", "--read-data", "--json")
    assert r.code == 1
    problems = r.summary()["problems"]
    assert any(rp in p["recovery_points"] for p in problems), problems
    target = tmp_path / "restore"
    r = registered("restore", "latest", "--target", target, "--json")
    assert r.code == 1
    failed = [e for e in r.json_lines() if e["event"] == "item_failed"]
    assert failed and all(e["code"] == "RestoreVerifyFailed" for e in failed)
    out = restored(target, src)
    assert not (out / "a.bin").exists(), "a file with damaged data must not be written"
    assert (out / "sub" / "b.txt").read_text() == "hello " * 1000


def test_flipped_tree_byte_is_found_without_read_data(registered: Cli, tmp_path: Path) -> None:
    _, vault, rp = _setup(registered, tmp_path)
    pack_id, offset, length = _chunk(vault, 1)
    _flip(vault, pack_id, offset + length - 5)
    r = registered("check", "--json")
    assert r.code == 1
    problems = r.summary()["problems"]
    assert any("tree" in p["problem"] and rp in p["recovery_points"] for p in problems), problems
    r = registered("restore", "latest", "--target", tmp_path / "restore")
    assert r.code == 1 and "Traceback" not in r.err
    assert "RestoreVerifyFailed" in r.err or "IntegrityError" in r.err, r.err


def test_index_pointing_past_the_pack_end_is_a_clean_error(registered: Cli, tmp_path: Path) -> None:
    _, vault, rp = _setup(registered, tmp_path)
    with _db(vault) as db:
        db.execute("UPDATE chunks SET offset = offset + 100000000 WHERE kind = 0")
    r = registered("restore", "latest", "--target", tmp_path / "restore")
    assert r.code == 1 and "Traceback" not in r.err and "RestoreVerifyFailed" in r.err, r.err
    r = registered("check", "--json")
    assert r.code == 1
    assert any(rp in p["recovery_points"] for p in r.summary()["problems"])


def test_damaged_index_is_found(registered: Cli, tmp_path: Path) -> None:
    _, vault, rp = _setup(registered, tmp_path)
    with _db(vault) as db:
        db.execute("UPDATE chunks SET offset = offset + 1 WHERE chunk_id = (SELECT chunk_id FROM chunks "
                   "WHERE kind = 0 ORDER BY length DESC LIMIT 1)")
    r = registered("check", "--read-data", "--json")
    assert r.code == 1
    problems = r.summary()["problems"]
    assert any(rp in p["recovery_points"] for p in problems), problems


def test_catalog_pointing_a_recovery_point_at_another_tree_is_refused(registered: Cli, tmp_path: Path) -> None:
    src, vault, first = _setup(registered, tmp_path)
    (src / "sub" / "b.txt").write_text("changed")
    second = registered.ok("backup", src, "--json").summary()["recovery_point"]
    with _db(vault) as db:
        root = db.execute("SELECT root FROM recovery_points WHERE rp_id = ?", (first,)).fetchone()[0]
        db.execute("UPDATE recovery_points SET root = ? WHERE rp_id = ?", (root, second))
    r = registered("restore", second, "--target", tmp_path / "restore")
    assert r.code == 1 and "IntegrityError" in r.err and "Traceback" not in r.err


def test_repair_then_backup_heals_damaged_points(registered: Cli, tmp_path: Path) -> None:
    src, vault, first = _setup(registered, tmp_path)
    pack_id, offset, length = _chunk(vault, 0)
    _flip(vault, pack_id, offset + length // 2)
    r = registered("check", "--read-data", "--repair", "--json")
    assert r.code == 1 and r.summary()["chunks_forgotten"] >= 1
    # the files did not change: the next backup still finds the damaged data missing and stores it again
    second = registered.ok("backup", src, "--json").summary()
    assert second["bytes_new_stored"] > 0
    registered.ok("check", "--read-data")
    for rp in (first, second["recovery_point"]):
        target = tmp_path / f"restore-{rp[:8]}"
        registered.ok("restore", rp, "--target", target)
        assert (restored(target, src) / "a.bin").read_bytes() == bytes(range(256)) * 4000


def test_restore_metadata_cannot_be_redirected_by_a_swapped_symlink(registered: Cli, tmp_path: Path,
                                                                    monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Between writing a file and setting its mode, another user swaps it for a symlink to a victim file.
    The mode must land on the restored file's inode, never on the victim."""
    import os

    from safehold.agent import fsmeta
    from safehold.agent.home import AgentHome
    from safehold.agent.reader import ChunkReader
    from safehold.agent.registration import open_keys
    from safehold.agent.restore import RestoreEngine
    from safehold.formats.chunks import Sealer
    from safehold.model import MachineId
    from safehold.vault.service import VaultService

    src = tmp_path / "src"
    src.mkdir()
    (src / "open.txt").write_text("public")
    (src / "open.txt").chmod(0o666)
    registered.ok("backup", src)
    victim = tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)

    target = tmp_path / "restore"
    real_apply = fsmeta.apply_meta

    def swap_then_apply(fd_or_path, e, with_owner, with_acls):  # type: ignore[no-untyped-def]
        if e.name == b"open.txt":
            placed = restored(target, src) / "open.txt"
            placed.unlink()
            placed.symlink_to(victim)
        return real_apply(fd_or_path, e, with_owner, with_acls)

    monkeypatch.setattr(fsmeta, "apply_meta", swap_then_apply)
    reg = AgentHome(registered.home).load()
    keys = open_keys(reg, (registered.home / "passphrase").read_text().strip())
    vault = VaultService.open_folder(Path(reg.vault_url.removeprefix("file://")))
    rp = vault.recovery_points(MachineId(reg.machine_id))[-1]
    RestoreEngine(ChunkReader(vault, MachineId(reg.machine_id), Sealer(keys)), lambda e: None).run(rp, str(target))
    assert os.stat(victim).st_mode & 0o777 == 0o600, "the restore changed a file outside its target"
