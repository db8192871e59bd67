"""Shared fixtures: a fake clock, an embedded vault, a CLI runner that starts the real `safehold`, and
PostgreSQL (one server per session, started on first use; a fresh database per test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgserver import PgServer, PgUnavailable

PASSPHRASE = "correct horse battery staple 2026"


class FakeClock:
    def __init__(self, ns: int = 1_800_000_000 * 10**9) -> None:
        self.ns = ns

    def now_ns(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1e9)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def summary(self) -> dict:
        return next(e for e in reversed(self.json_lines()) if e.get("event") == "summary")


class Cli:
    """Runs `safehold` as a separate process, the way users do, with its own agent folder."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def __call__(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None,
                 prefix: tuple[str, ...] = ()) -> Result:
        # English unless a test asks for another language
        full_env = {**os.environ, "LC_ALL": "C.UTF-8", "SAFEHOLD_HOME": str(self.home), **(env or {})}
        full_env.pop("SAFEHOLD_PASSPHRASE_FILE", None)
        p = subprocess.run([*prefix, sys.executable, "-m", "safehold.cli.main", *map(str, args)], env=full_env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        return Result(p.returncode, p.stdout, p.stderr)

    def ok(self, *args: str | os.PathLike[str]) -> Result:
        r = self(*args)
        assert r.code == 0, f"safehold {' '.join(map(str, args))} -> {r.code}\n{r.out}\n{r.err}"
        return r


def restored(target: Path, src: Path) -> Path:
    """Where restore puts `src` below `target` (absolute paths are recreated)."""
    return target / str(src).lstrip("/")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def passphrase_file(tmp_path: Path) -> Path:
    p = tmp_path / "passphrase"
    p.write_text(PASSPHRASE + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "agent")


@pytest.fixture
def registered(tmp_path: Path, cli: Cli, passphrase_file: Path) -> Cli:
    """A vault in tmp_path/vault and this machine registered with it through the CLI."""
    creds = tmp_path / "v.vaultcredentials"
    cli.ok("vault", "init", tmp_path / "vault", "--credentials-out", creds)
    cli.ok("register", "--credentials", creds, "--passphrase-file", passphrase_file)
    return cli


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server; `pg_server.create_database()` gives another empty database."""
    try:
        server = PgServer()
        server.start()
    except PgUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A new, empty PostgreSQL database for this test: `postgresql+psycopg://safehold@127.0.0.1:PORT/NAME`.

    Dropped afterwards (WITH (FORCE): connections left open do not keep it)."""
    name = pg_server.create_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest) -> str | None:
    """The vault catalog to test on: None (the SQLite file in the vault folder) or a fresh PostgreSQL database.

    Pass it on as `VaultService.init_folder(folder, catalog_url=catalog_url)` or `vault init --catalog URL`."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url
