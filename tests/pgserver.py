"""A throwaway PostgreSQL 15 server for the test suite: started once per session, a fresh database per test.

`initdb` and `pg_ctl` refuse to run as root, so as root they run as the `postgres` user (runuser), in a
folder made with mkdtemp under /tmp and handed to that user (pytest's own temp folders are closed to others).
The server listens on 127.0.0.1 only, on a free port, with its unix socket inside its folder; loopback
connections are trusted (no passwords). fsync is off: the data is thrown away at the end.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

BINDIR = Path(os.environ.get("SAFEHOLD_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
ROLE = "safehold"  # what the vault connects as: may create databases, not a superuser
ADMIN = "postgres"  # the bootstrap superuser, for CREATE/DROP DATABASE


class PgUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self) -> None:
        missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (BINDIR / b).is_file()]
        if missing:
            raise PgUnavailable(
                f"PostgreSQL 15 is not installed ({', '.join(missing)} missing in {BINDIR}); "
                "install the Debian package postgresql-15 (scripts/apt.sh does)")
        self._as: list[str] = []
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root needs a `postgres` user to run PostgreSQL as") from None
            self._as = ["runuser", "-u", "postgres", "--"]
        self.folder = Path(tempfile.mkdtemp(prefix="safehold-pg-", dir="/tmp"))
        self.data = self.folder / "data"
        self.port = 0
        self.startup_seconds = 0.0
        self._running = False
        if self._owner is not None:
            os.chown(self.folder, self._owner.pw_uid, self._owner.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([*self._as, *args], cwd=self.folder, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=120)
        if p.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PgUnavailable(f"{' '.join(args[:2])} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}\n{tail}")
        return p

    def start(self) -> None:
        t0 = time.monotonic()
        self._run(str(BINDIR / "initdb"), "-D", str(self.data), "-U", ADMIN, "--auth=trust", "--no-sync",
                  "--no-instructions", "-E", "UTF8", "--locale=C")
        for attempt in range(5):  # the free port may be taken between finding and binding it
            self.port = _free_port()
            opts = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            try:
                self._run(str(BINDIR / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"),
                          "-o", opts, "-w", "-t", "60", "start")
                break
            except PgUnavailable:
                if attempt == 4:
                    raise
        self._running = True
        self._admin(f"CREATE ROLE {ROLE} LOGIN CREATEDB")
        self.startup_seconds = time.monotonic() - t0

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=ADMIN, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def url(self, dbname: str, user: str = ROLE) -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A new empty database owned by the test role; returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self._admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return name

    def set_reachable(self, name: str, reachable: bool) -> None:
        """Take one database away from its clients (refuse new connections, end open ones), or give it back:
        a catalog outage without stopping the server other tests use."""
        self._admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'true' if reachable else 'false'}")
        if not reachable:
            self._admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")

    def drop_database(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            if self._running:
                self._run(str(BINDIR / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
                self._running = False
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
