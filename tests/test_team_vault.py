"""End to end through the CLI, as the README tells it: a vault served for a team, two machines registering
with it, a renamed host refused and re-registered, a proxy that wants credentials, and a vault that is down.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from safehold.formats import credentials as credfmt

from conftest import Cli, restored
from proxyserver import Proxy
from vaultserver import VaultServer


def _machine(tmp_path: Path, name: str) -> tuple[Cli, dict[str, str]]:
    return Cli(tmp_path / f"agent-{name}"), {"SAFEHOLD_HOSTNAME": name, "SAFEHOLD_RETRY_BASE": "0"}


def _ok(cli: Cli, env: dict[str, str], *args: str | Path) -> str:
    r = cli(*args, env=env)
    assert r.code == 0, f"safehold {' '.join(map(str, args))} -> {r.code}\n{r.out}\n{r.err}"
    return r.out


@pytest.fixture
def team(tmp_path: Path, cli: Cli) -> tuple[VaultServer, Path]:
    vault = tmp_path / "vault"
    cli.ok("vault", "init", vault, "--name", "team", "--credentials-out", tmp_path / "unused.vaultcredentials")
    server = VaultServer(vault).start()
    cli.ok("vault", "settings", vault, "--url", server.url)
    return server, vault


def test_a_team_vault_with_two_machines(tmp_path: Path, cli: Cli, team: tuple[VaultServer, Path],
                                        passphrase_file: Path) -> None:
    server, vault = team
    try:
        # the admin issues a file on the vault's host, and another from anywhere with the admin token
        cli.ok("vault", "credentials", vault, "--out", tmp_path / "alpha.vaultcredentials")
        creds = credfmt.parse("alpha.vaultcredentials", (tmp_path / "alpha.vaultcredentials").read_bytes())
        assert creds.url == server.url and creds.tls_fingerprint == server.fingerprint

        alpha, alpha_env = _machine(tmp_path, "alpha")
        _ok(alpha, alpha_env, "register", "--credentials", tmp_path / "alpha.vaultcredentials",
            "--passphrase-file", passphrase_file)
        data_a = tmp_path / "data-alpha"
        (data_a / "docs").mkdir(parents=True)
        (data_a / "docs" / "plan.txt").write_text("alpha's plan\n" * 1000)
        (data_a / "big.bin").write_bytes(bytes(range(256)) * 40_000)
        _ok(alpha, alpha_env, "backup", data_a)

        _ok(cli, {}, "vault", "credentials", server.url, "--admin-token-file", vault / "admin.token",
            "--fingerprint", server.fingerprint, "--out", tmp_path / "beta.vaultcredentials")
        beta, beta_env = _machine(tmp_path, "beta")
        _ok(beta, beta_env, "register", "--credentials", tmp_path / "beta.vaultcredentials",
            "--generate-passphrase", tmp_path / "beta.passphrase")
        data_b = tmp_path / "data-beta"
        data_b.mkdir()
        (data_b / "notes.md").write_text("beta\n")
        _ok(beta, beta_env, "backup", data_b)

        # each machine sees only its own recovery points
        assert str(data_a) in _ok(alpha, alpha_env, "recovery-points")
        listed_b = _ok(beta, beta_env, "recovery-points")
        assert str(data_b) in listed_b and str(data_a) not in listed_b
        machines = _ok(cli, {}, "vault", "settings", vault)
        assert "alpha" in machines and "beta" in machines and "Machines:     2 of at most 50" in machines

        target = tmp_path / "restore"
        _ok(alpha, alpha_env, "restore", "latest", "--target", target)
        out = restored(target, data_a)
        assert (out / "docs" / "plan.txt").read_text() == "alpha's plan\n" * 1000
        assert (out / "big.bin").read_bytes() == bytes(range(256)) * 40_000

        # the host is renamed: the vault refuses with 230006 and says what to do
        renamed = {**alpha_env, "SAFEHOLD_HOSTNAME": "alpha-renamed"}
        r = alpha("backup", data_a, env=renamed)
        assert r.code == 1
        assert "230006" in r.err and "alpha-renamed" in r.err and "hostnamectl" in r.err
        # re-registering with a new file and the first passphrase keeps the machine and its recovery points
        cli.ok("vault", "credentials", vault, "--out", tmp_path / "again.vaultcredentials")
        wrong = tmp_path / "wrong.passphrase"
        wrong.write_text("not the first passphrase at all\n")
        wrong.chmod(0o600)
        r = alpha("register", "--credentials", tmp_path / "again.vaultcredentials", "--passphrase-file", wrong,
                  env=renamed)
        assert r.code != 0 and "700103" in r.err
        cli.ok("vault", "credentials", vault, "--out", tmp_path / "again.vaultcredentials")
        _ok(alpha, renamed, "register", "--credentials", tmp_path / "again.vaultcredentials",
            "--passphrase-file", passphrase_file)
        assert str(data_a) in _ok(alpha, renamed, "recovery-points")
        _ok(alpha, renamed, "backup", data_a)
        assert len([ln for ln in _ok(alpha, renamed, "recovery-points").splitlines() if str(data_a) in ln]) == 2
    finally:
        server.stop()


def test_restoring_another_machines_data_needs_its_passphrase(tmp_path: Path, cli: Cli,
                                                              team: tuple[VaultServer, Path],
                                                              passphrase_file: Path) -> None:
    server, vault = team
    try:
        cli.ok("vault", "credentials", vault, "--out", tmp_path / "a.vaultcredentials")
        alpha, alpha_env = _machine(tmp_path, "alpha")
        _ok(alpha, alpha_env, "register", "--credentials", tmp_path / "a.vaultcredentials", "--passphrase-file",
            passphrase_file)
        data = tmp_path / "alpha-data"
        (data / "sub").mkdir(parents=True)
        (data / "sub" / "report.txt").write_text("alpha's report\n" * 500)
        _ok(alpha, alpha_env, "backup", data)
        cli.ok("vault", "credentials", vault, "--out", tmp_path / "b.vaultcredentials")
        beta, beta_env = _machine(tmp_path, "beta")
        _ok(beta, beta_env, "register", "--credentials", tmp_path / "b.vaultcredentials",
            "--generate-passphrase", tmp_path / "beta.passphrase")

        cli.ok("vault", "credentials", vault, "--out", tmp_path / "r.vaultcredentials")
        wrong = tmp_path / "wrong.passphrase"
        wrong.write_text("this is not alpha's passphrase\n")
        wrong.chmod(0o600)
        target = tmp_path / "on-beta"
        r = beta("restore", "latest", "--target", target, "--from-machine", "alpha", "--credentials",
                 tmp_path / "r.vaultcredentials", "--source-passphrase-file", wrong, env=beta_env)
        assert r.code == 1 and "700103" in r.err and not target.exists()
        # the refused attempt did not use the file up: the right passphrase works with it
        out = _ok(beta, beta_env, "restore", "latest", "--target", target, "--from-machine", "alpha",
                  "--credentials", tmp_path / "r.vaultcredentials", "--source-passphrase-file", passphrase_file)
        assert "Restoring from alpha" in out
        assert (restored(target, data) / "sub" / "report.txt").read_text() == "alpha's report\n" * 500
        # another try within the grant's 24 hours needs no new file; the grant is kept private
        grant = beta.home / "grants" / "alpha.json"
        assert grant.stat().st_mode & 0o077 == 0
        _ok(beta, beta_env, "restore", "latest", "--target", tmp_path / "again", "--from-machine", "alpha",
            "--source-passphrase-file", passphrase_file)
        # without it, the file is used up: one file, one grant
        grant.unlink()
        r = beta("restore", "latest", "--target", tmp_path / "third", "--from-machine", "alpha", "--credentials",
                 tmp_path / "r.vaultcredentials", "--source-passphrase-file", passphrase_file, env=beta_env)
        assert r.code == 1 and "34513" in r.err
    finally:
        server.stop()


def test_proxy_settings_and_a_proxy_asking_for_credentials(tmp_path: Path, cli: Cli,
                                                          team: tuple[VaultServer, Path],
                                                          passphrase_file: Path) -> None:
    server, vault = team
    try:
        cli.ok("vault", "credentials", vault, "--out", tmp_path / "c.vaultcredentials")
        agent, env = _machine(tmp_path, "gamma")
        data = tmp_path / "data"
        data.mkdir()
        (data / "f.txt").write_text("through the proxy\n")
        with Proxy(user="gamma", password="proxy-pass-1") as proxy:
            _ok(agent, env, "settings", "--proxy", proxy.url)
            r = agent("register", "--credentials", tmp_path / "c.vaultcredentials", "--passphrase-file",
                      passphrase_file, env=env)
            assert r.code == 1
            assert "100050" in r.err and "407" in r.err and "--proxy-user" in r.err
            password = tmp_path / "proxy.pw"
            password.write_text("proxy-pass-1\n")
            password.chmod(0o600)
            shown = _ok(agent, env, "settings", "--proxy-user", "gamma", "--proxy-password-file", password)
            assert proxy.url in shown and "gamma" in shown and "proxy-pass-1" not in shown
            cli.ok("vault", "credentials", vault, "--out", tmp_path / "c.vaultcredentials")
            _ok(agent, env, "register", "--credentials", tmp_path / "c.vaultcredentials", "--passphrase-file",
                passphrase_file)
            _ok(agent, env, "backup", data)
            assert f"127.0.0.1:{server.port}" in proxy.connect_targets()
        # the proxy is gone: the error names the proxy; going direct works again
        r = agent("backup", data, env=env)
        assert r.code == 1 and "100050" in r.err and "proxy" in r.err.lower()
        _ok(agent, env, "settings", "--no-proxy")
        _ok(agent, env, "backup", data)
    finally:
        server.stop()
    r = agent("backup", data, env=env)
    assert r.code == 1
    assert "100050" in r.err and "refused" in r.err.lower() and "safehold doctor" in r.err
