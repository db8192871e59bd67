"""End to end: backups through the CLI, expiry and garbage collection by the vault, then `check --read-data`
and a byte-exact restore of what is kept; the pack files really shrink."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from safehold.formats.policy import Retention
from safehold.vault.housekeeping import Housekeeping
from safehold.vault.service import VaultService

from conftest import Cli, FakeClock, restored


def _blob_bytes(vault: Path) -> int:
    return sum(p.stat().st_size for p in (vault / "blobs" / "packs").rglob("*") if p.is_file())


def test_expired_data_is_freed_and_what_stays_checks_and_restores(registered: Cli, tmp_path: Path) -> None:
    src, vault = tmp_path / "src", tmp_path / "vault"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (src / "small.txt").write_bytes(os.urandom(20_000))
    registered.ok("backup", src)
    (src / "big.bin").unlink()
    (src / "new.txt").write_bytes(os.urandom(30_000))
    second = registered.ok("backup", src, "--json").summary()["recovery_point"]
    before = _blob_bytes(vault)

    r = registered.ok("vault", "housekeeping", vault, "--dry-run", "--json")
    assert json.loads(r.out)["dry_run"] is True and json.loads(r.out)["points_expired"] == 0  # no rules yet
    svc = VaultService.open_folder(vault, FakeClock(time.time_ns() + 30 * 86_400 * 10**9))
    try:
        [mid] = [m["machine_id"] for m in svc.machines()]
        svc.set_retention(mid, Retention(daily_days=7))
        fig = Housekeeping(svc, grace_ns=0).run()
    finally:
        svc.close()
    assert fig is not None and fig.points_expired == 1
    assert fig.packs_rewritten >= 1 and fig.bytes_deleted >= 3 * 1024 * 1024
    after = _blob_bytes(vault)
    assert after <= before - 3 * 1024 * 1024, (before, after)

    listed = [p["id"] for p in registered.ok("recovery-points", "--json").json_lines()[-1]["recovery_points"]]
    assert listed == [second]
    assert registered.ok("check", "--read-data", "--json").summary()["problems"] == []
    target = tmp_path / "restore"
    registered.ok("restore", second, "--target", target)
    out = restored(target, src)
    assert sorted(p.name for p in out.iterdir()) == ["new.txt", "small.txt"]
    for name in ("new.txt", "small.txt"):
        assert (out / name).read_bytes() == (src / name).read_bytes()

    r = registered.ok("vault", "housekeeping", vault, "--grace-minutes", "0")
    assert "Housekeeping completed." in r.out
