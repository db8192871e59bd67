"""`safehold doctor`, each check provoked for real: a tiny tmpfs as the cache folder, a deleted or damaged key
file, a corrupt checksum store, a renamed host, a proxy answering 407, a vault that is down, a held lock, a
wrong clock, an expired credentials file, a crowded temporary folder and an unknown time zone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from safehold.agent.doctor import Doctor
from safehold.agent.home import AgentHome
from safehold.agent.registration import stored_passphrase
from safehold.cli.context import connect

from conftest import Cli, FakeClock, Result
from proxyserver import Proxy
from vaultserver import VaultServer

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def _findings(r: Result) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for line in r.out.splitlines():
        doc = json.loads(line)
        if doc["event"] == "finding":
            out.setdefault(doc["check"], []).append(doc)
    return out


def _doctor(cli: Cli, *args: str | Path, env: dict[str, str] | None = None) -> tuple[Result, dict[str, list[dict]]]:
    r = cli("doctor", "--json", *args, env=env)
    return r, _findings(r)


def _status(found: dict[str, list[dict]], check: str) -> tuple[str, str | None]:
    f = found[check][0]
    return f["status"], (f["error"] or {}).get("id")


def test_a_healthy_machine_passes(registered: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello\n")
    registered.ok("backup", data)
    r, found = _doctor(registered)
    assert r.code == 0, r.out + r.err
    for check in ("registration", "vault", "version", "hostname", "cache", "space", "key", "checksums",
                  "timezone", "temp", "locks"):
        assert _status(found, check)[0] == "ok", (check, found[check])
    text = registered("doctor")
    assert text.code == 0 and "0 failed" in text.out


@root_only
def test_a_tiny_cache_folder_is_low_on_space(tmp_path: Path, cli: Cli, passphrase_file: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(cache)], check=True)
    try:
        creds = tmp_path / "v.vaultcredentials"
        cli.ok("vault", "init", tmp_path / "vault", "--credentials-out", creds)
        cli.ok("register", "--credentials", creds, "--passphrase-file", passphrase_file, "--cache-folder", cache)
        data = tmp_path / "data"
        data.mkdir()
        (data / "big.bin").write_bytes(os.urandom(40 * 1024 * 1024))
        cli.ok("backup", data)
        r, found = _doctor(cli)
        assert r.code == 1
        assert _status(found, "space") == ("failed", "34602")
        assert "40.0 MiB" in found["space"][0]["message"]
    finally:
        subprocess.run(["umount", str(cache)], check=True)


@pytest.mark.parametrize("damage", ["deleted", "damaged"])
def test_a_deleted_or_damaged_key_file(registered: Cli, damage: str) -> None:
    reg = json.loads((registered.home / "registration.json").read_text())
    key = Path(reg["cache_folder"]) / "key.wrapped"
    if damage == "deleted":
        key.unlink()
    else:
        key.write_bytes(b'{"format": "safehold-key", "version": 1, "garbage": true}')
    r, found = _doctor(registered)
    assert r.code == 1
    assert _status(found, "key") == ("failed", "34506")


def test_a_corrupt_checksum_store(registered: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("x\n")
    registered.ok("backup", data)
    reg = json.loads((registered.home / "registration.json").read_text())
    store = Path(reg["cache_folder"]) / "checksums.sqlite"
    for extra in ("-wal", "-shm"):
        Path(str(store) + extra).unlink(missing_ok=True)
    store.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    r, found = _doctor(registered)
    assert r.code == 1
    assert _status(found, "checksums") == ("failed", "34600")


def test_a_renamed_host(registered: Cli) -> None:
    r, found = _doctor(registered, env={"SAFEHOLD_HOSTNAME": "someone-else"})
    assert r.code == 1
    assert _status(found, "hostname") == ("failed", "230006")
    text = registered("doctor", env={"SAFEHOLD_HOSTNAME": "someone-else"})
    assert "hostnamectl" in text.out


def test_a_held_lock_in_the_cache_folder(registered: Cli) -> None:
    reg = json.loads((registered.home / "registration.json").read_text())
    lock = Path(reg["cache_folder"]) / "job.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.pwrite(fd, b'backup pid %d' % os.getpid(), 0); print('held', flush=True); "
         "sys.stdin.read()", str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        r, found = _doctor(registered)
        assert r.code == 3
        status, eid = _status(found, "locks")
        assert (status, eid) == ("warning", "34604")
        assert str(holder.pid) in found["locks"][0]["message"]
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert _status(_doctor(registered)[1], "locks")[0] == "ok"


def test_an_expired_credentials_file(registered: Cli, tmp_path: Path) -> None:
    registered.ok("vault", "credentials", tmp_path / "vault", "--out", tmp_path / "new.vaultcredentials")
    r, found = _doctor(registered, "--credentials", tmp_path / "new.vaultcredentials")
    assert _status(found, "credentials")[0] == "ok"
    doc = json.loads((tmp_path / "new.vaultcredentials").read_text())
    doc["expires_ns"] = doc["issued_ns"] + 1
    (tmp_path / "old.vaultcredentials").write_text(json.dumps(doc))
    r, found = _doctor(registered, "--credentials", tmp_path / "old.vaultcredentials")
    assert r.code == 1
    assert _status(found, "credentials") == ("failed", "34513")
    assert "expired" in found["credentials"][0]["error"]["message"]


def test_a_crowded_temporary_folder_and_an_unknown_time_zone(registered: Cli, tmp_path: Path) -> None:
    crowded = tmp_path / "tmp"
    crowded.mkdir()
    for i in range(60_001):
        os.close(os.open(crowded / f"t{i}", os.O_CREAT | os.O_WRONLY, 0o600))
    r, found = _doctor(registered, env={"TMPDIR": str(crowded), "TZ": "Nowhere/Atlantis"})
    assert r.code == 3
    temp = [f for f in found["temp"] if str(crowded) in f["message"]]
    assert temp and temp[0]["status"] == "warning" and temp[0]["error"]["id"] == "34637"
    assert _status(found, "timezone") == ("warning", "34634")


# ---- a vault server: down, behind a proxy asking for credentials, with another clock ------------------------

@pytest.fixture
def served_agent(tmp_path: Path, cli: Cli, passphrase_file: Path):  # type: ignore[no-untyped-def]
    vault = tmp_path / "vault"
    cli.ok("vault", "init", vault, "--credentials-out", tmp_path / "unused.vaultcredentials")
    server = VaultServer(vault).start()
    try:
        cli.ok("vault", "settings", vault, "--url", server.url)
        cli.ok("vault", "credentials", vault, "--out", tmp_path / "c.vaultcredentials")
        cli.ok("register", "--credentials", tmp_path / "c.vaultcredentials", "--passphrase-file", passphrase_file)
        yield cli, server
    finally:
        server.stop()


def test_a_vault_that_is_down(served_agent) -> None:  # type: ignore[no-untyped-def]
    cli, server = served_agent
    assert _status(_doctor(cli)[1], "vault")[0] == "ok"
    server.stop()
    r, found = _doctor(cli)
    assert r.code == 1
    assert _status(found, "vault") == ("failed", "100050")
    assert "TCP" in found["vault"][0]["error"]["message"]
    assert _status(found, "version")[0] == "skipped"


def test_a_proxy_answering_407(served_agent) -> None:  # type: ignore[no-untyped-def]
    cli, _server = served_agent
    with Proxy(user="doc", password="proxy-pass-2") as proxy:
        cli.ok("settings", "--proxy", proxy.url)
        r, found = _doctor(cli, env={"SAFEHOLD_RETRY_BASE": "0"})
        assert r.code == 1
        status, eid = _status(found, "vault")
        assert (status, eid) == ("failed", "100050")
        err = found["vault"][0]["error"]
        assert "407" in err["message"] and any("--proxy-user" in a for a in err["actions"])
        text = cli("doctor", env={"SAFEHOLD_RETRY_BASE": "0"})
        assert "--proxy-user" in text.out


def test_a_clock_far_from_the_vaults(served_agent) -> None:  # type: ignore[no-untyped-def]
    cli, _server = served_agent
    home = AgentHome(cli.home)
    skewed = FakeClock(ns=0)
    skewed.ns = int(__import__("time").time() * 1e9) + 3600 * 10**9
    doctor = Doctor(home, lambda reg: connect(home, reg), lambda: stored_passphrase(home), clock=skewed)
    clock = next(f for f in doctor.run() if f.check == "clock")
    assert clock.status == "failed" and clock.error is not None and clock.error.spec.id == 34634
