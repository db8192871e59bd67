"""Registration rules: credentials files (34513, 100110), machine limit, passphrase and key file (34506)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from safehold.agent.home import AgentHome
from safehold.agent.registration import open_keys, open_stored_keys, register
from safehold.errors import SafeholdError
from safehold.vault.service import VaultService

from conftest import PASSPHRASE, Cli, FakeClock


def _write(creds, path: Path) -> Path:  # type: ignore[no-untyped-def]
    path.write_bytes(creds.encode())
    return path


def _register(tmp_path: Path, svc: VaultService, creds_file: Path, name: str = "agent",
              clock: FakeClock | None = None, passphrase: str = PASSPHRASE):  # type: ignore[no-untyped-def]
    return register(AgentHome(tmp_path / name), creds_file, passphrase, lambda c, t: svc, clock=clock)


def _code(exc: pytest.ExceptionInfo[SafeholdError]) -> str:
    return exc.value.spec.id_text


NewVault = Callable[..., VaultService]


@pytest.fixture
def new_vault(tmp_path: Path, catalog_url: str | None, request: pytest.FixtureRequest) -> Iterator[NewVault]:
    """`new_vault(name, **init_folder_args)`: a vault in tmp_path/name on the catalog under test (a database of
    its own for each vault on PostgreSQL: two vaults never share one), closed after the test."""
    made: list[VaultService] = []

    def make(name: str = "vault", **kwargs: Any) -> VaultService:
        url = catalog_url
        if url is not None and made:
            server = request.getfixturevalue("pg_server")
            url = server.url(server.create_database())
        svc = VaultService.init_folder(tmp_path / name, catalog_url=url, **kwargs)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def test_register_writes_private_files(tmp_path: Path, new_vault: NewVault) -> None:
    svc = new_vault("vault")
    reg = _register(tmp_path, svc, _write(svc.issue_credentials(), tmp_path / "a.vaultcredentials"))
    home = AgentHome(tmp_path / "agent")
    for p in (home.registration_file, home.token_file, home.passphrase_file, Path(reg.cache_folder) / "key.wrapped",
              Path(reg.cache_folder)):
        assert p.stat().st_mode & 0o077 == 0, p
    assert PASSPHRASE not in json.dumps(json.loads(home.registration_file.read_text()))
    # the vault holds the same wrapped key, which is useless without the passphrase
    assert svc.wrapped_key(reg.machine_id) == (Path(reg.cache_folder) / "key.wrapped").read_bytes()
    assert open_keys(reg, PASSPHRASE).key_id == reg.key_id


def test_expired_credentials_are_34513(tmp_path: Path, new_vault: NewVault, clock: FakeClock) -> None:
    svc = new_vault("vault", clock=clock)
    creds = _write(svc.issue_credentials(), tmp_path / "a.vaultcredentials")
    clock.advance(10 * 86400 + 1)
    with pytest.raises(SafeholdError) as exc:
        _register(tmp_path, svc, creds, clock=clock)
    assert _code(exc) == "34513" and "expired" in exc.value.text


def test_credentials_valid_for_ten_days(tmp_path: Path, new_vault: NewVault, clock: FakeClock) -> None:
    svc = new_vault("vault", clock=clock)
    creds = _write(svc.issue_credentials(), tmp_path / "a.vaultcredentials")
    clock.advance(10 * 86400 - 60)
    _register(tmp_path, svc, creds, clock=clock)


def test_superseded_and_used_credentials_are_34513(tmp_path: Path, new_vault: NewVault) -> None:
    svc = new_vault("vault")
    old = _write(svc.issue_credentials(), tmp_path / "old.vaultcredentials")
    new = _write(svc.issue_credentials(), tmp_path / "new.vaultcredentials")
    with pytest.raises(SafeholdError) as exc:
        _register(tmp_path, svc, old)
    assert _code(exc) == "34513" and "newer" in exc.value.text
    _register(tmp_path, svc, new)
    with pytest.raises(SafeholdError) as exc:
        _register(tmp_path, svc, new, name="second")
    assert _code(exc) == "34513" and "already used" in exc.value.text


def test_forged_secret_is_34513(tmp_path: Path, new_vault: NewVault) -> None:
    svc = new_vault("vault")
    f = _write(svc.issue_credentials(), tmp_path / "a.vaultcredentials")
    doc = json.loads(f.read_text())
    doc["secret"] = "A" * 43 + "="
    f.write_text(json.dumps(doc))
    with pytest.raises(SafeholdError) as exc:
        _register(tmp_path, svc, f)
    assert _code(exc) == "34513"


def test_other_vault_is_100110(tmp_path: Path, new_vault: NewVault) -> None:
    one = new_vault("one")
    two = new_vault("two")
    _register(tmp_path, one, _write(one.issue_credentials(), tmp_path / "1.vaultcredentials"))
    with pytest.raises(SafeholdError) as exc:
        _register(tmp_path, two, _write(two.issue_credentials(), tmp_path / "2.vaultcredentials"))
    assert _code(exc) == "100110"


def test_reregister_keeps_identity_and_needs_first_passphrase(tmp_path: Path, new_vault: NewVault) -> None:
    svc = new_vault("vault")
    first = _register(tmp_path, svc, _write(svc.issue_credentials(), tmp_path / "1.vaultcredentials"))
    with pytest.raises(SafeholdError) as exc:
        _register(tmp_path, svc, _write(svc.issue_credentials(), tmp_path / "2.vaultcredentials"),
                  passphrase="a different passphrase!")
    assert exc.value.spec.code == "WrongPassphrase"
    again = _register(tmp_path, svc, _write(svc.issue_credentials(), tmp_path / "3.vaultcredentials"))
    assert (again.machine_id, again.key_id) == (first.machine_id, first.key_id)
    assert len(svc.machines()) == 1


def test_machine_limit(tmp_path: Path, new_vault: NewVault) -> None:
    svc = new_vault("vault", max_machines=2)
    for i in range(2):
        _register(tmp_path, svc, _write(svc.issue_credentials(), tmp_path / f"{i}.vaultcredentials"), name=f"m{i}")
    with pytest.raises(SafeholdError) as exc:
        _register(tmp_path, svc, _write(svc.issue_credentials(), tmp_path / "x.vaultcredentials"), name="m3")
    assert exc.value.spec.code == "MachineLimitReached"
    assert new_vault("default").info().max_machines == 50


def test_cli_registration_errors(tmp_path: Path, cli: Cli, passphrase_file: Path,
                                catalog_url: str | None) -> None:
    creds = tmp_path / "v.vaultcredentials"
    catalog = ("--catalog", catalog_url) if catalog_url else ()
    cli.ok("vault", "init", tmp_path / "vault", "--credentials-out", creds, *catalog)
    assert creds.stat().st_mode & 0o077 == 0
    # wrong extension
    wrong = tmp_path / "v.json"
    wrong.write_bytes(creds.read_bytes())
    r = cli("register", "--credentials", wrong, "--passphrase-file", passphrase_file)
    assert r.code != 0 and "34513" in r.err and "Recommended actions" in r.err and "Traceback" not in r.err
    # corrupt file
    bad = tmp_path / "bad.vaultcredentials"
    bad.write_text("{ this is not json")
    r = cli("register", "--credentials", bad, "--passphrase-file", passphrase_file, "--json")
    err = r.json_lines()[-1]["error"]
    assert r.code != 0 and err["id"] == "34513" and err["actions"]
    # short passphrase
    short = tmp_path / "short"
    short.write_text("too short")
    short.chmod(0o600)
    r = cli("register", "--credentials", creds, "--passphrase-file", short)
    assert r.code == 2 and "16" in r.err
    # passphrase file readable by others
    loose = tmp_path / "loose"
    loose.write_text(PASSPHRASE)
    loose.chmod(0o644)
    r = cli("register", "--credentials", creds, "--passphrase-file", loose)
    assert r.code == 2 and "chmod 600" in r.err
    # a good registration, with a generated passphrase
    gen = tmp_path / "generated-passphrase"
    cli.ok("register", "--credentials", creds, "--generate-passphrase", gen)
    assert gen.stat().st_mode & 0o777 == 0o600 and len(gen.read_text().strip()) >= 16


def test_missing_or_damaged_key_file_is_34506(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    reg = json.loads((registered.home / "registration.json").read_text())
    key = Path(reg["cache_folder"]) / "key.wrapped"
    saved = key.read_bytes()
    key.unlink()
    r = registered("backup", src)
    assert r.code == 1 and "34506" in r.err and "Traceback" not in r.err
    key.write_bytes(saved[: len(saved) // 2])
    key.chmod(0o600)
    r = registered("backup", src)
    assert r.code == 1 and "34506" in r.err
    key.write_bytes(saved)
    registered.ok("backup", src)


def test_wrong_passphrase_file_gives_its_own_error(registered: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("this is not the passphrase")
    other.chmod(0o600)
    r = registered("recovery-points", "--passphrase-file", other)
    assert r.code == 1 and "700103" in r.err and "WrongPassphrase" in r.err


def test_stored_passphrase_opens_the_key_cache_without_argon2(tmp_path: Path, new_vault: NewVault) -> None:
    svc = new_vault("vault")
    reg = _register(tmp_path, svc, _write(svc.issue_credentials(), tmp_path / "a.vaultcredentials"))
    home = AgentHome(tmp_path / "agent")
    assert home.key_cache_file.stat().st_mode & 0o077 == 0
    keys = open_stored_keys(home, reg)
    assert keys is not None and keys.master == open_keys(reg, PASSPHRASE).master
    assert keys.master not in home.key_cache_file.read_bytes()  # sealed, never in the clear
    # A cache sealed under another passphrase (the stored one was changed) is not trusted: the key is opened
    # from the wrapped key with the stored passphrase, and a wrong stored passphrase is refused as before.
    home.passphrase_file.write_text("another passphrase of enough length")
    with pytest.raises(SafeholdError) as exc:
        open_stored_keys(home, reg)
    assert _code(exc) == "700103"  # WrongPassphrase
    home.passphrase_file.write_text(PASSPHRASE)
    home.key_cache_file.write_bytes(b"damaged")
    assert open_stored_keys(home, reg).master == keys.master  # type: ignore[union-attr]
    assert open_stored_keys(home, reg) is not None and len(home.key_cache_file.read_bytes()) > 7  # rebuilt
    # Without a stored passphrase the cache goes too: nothing then opens the key without the passphrase.
    home.passphrase_file.unlink()
    assert open_stored_keys(home, reg) is None
    assert not home.key_cache_file.exists()
