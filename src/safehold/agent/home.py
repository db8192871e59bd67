"""The agent's folders and its registration record, and private (0600) file handling.

The agent folder holds registration.json, the machine token and the passphrase; the cache folder holds
the wrapped key, the checksum store, job logs and failed-file lists.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from safehold.errors import raise_error

REGISTRATION = "registration.json"


def default_home() -> Path:
    env = os.environ.get("SAFEHOLD_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/safehold")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "safehold"


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_private(path: Path) -> bytes:
    """Read a secret file, refusing one that group or others may read."""
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise_error("SecretFileUnsafe", path=str(path), mode=oct(stat.S_IMODE(st.st_mode)))
    return path.read_bytes()


@dataclass(frozen=True)
class Registration:
    vault_id: str
    vault_name: str
    vault_url: str
    machine_id: str
    hostname: str
    os_machine_id: str
    cache_folder: str
    key_id: str
    registered_ns: int
    tls_fingerprint: str | None = None  # pinned certificate of a vault server; None for an embedded vault

    @property
    def cache(self) -> CacheFolder:
        return CacheFolder(Path(self.cache_folder))


class AgentHome:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def registration_file(self) -> Path:
        return self.root / REGISTRATION

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def passphrase_file(self) -> Path:
        return self.root / "passphrase"

    @property
    def key_cache_file(self) -> Path:
        return self.root / "key.cache"

    @property
    def settings_file(self) -> Path:
        return self.root / "settings.json"

    @property
    def policy_file(self) -> Path:
        return self.root / "policy.json"

    @property
    def daemon_pid_file(self) -> Path:
        return self.root / "agent.pid"

    @property
    def schedule_state_file(self) -> Path:
        return self.root / "schedule.json"

    @property
    def proxy_password_file(self) -> Path:
        return self.root / "proxy.password"

    def token(self) -> str:
        try:
            return read_private(self.token_file).decode("ascii", errors="replace").strip()
        except FileNotFoundError:
            raise_error("TokenInvalid", detail=f"{self.token_file} is missing")

    def load(self) -> Registration:
        try:
            doc = json.loads(self.registration_file.read_text())
            return Registration(**doc)
        except FileNotFoundError:
            raise_error("NotRegistered", home=str(self.root))
        except (ValueError, TypeError) as exc:
            raise_error("NotRegistered", home=str(self.root), detail=f"registration.json is damaged: {exc}")

    def load_optional(self) -> Registration | None:
        return self.load() if self.registration_file.exists() else None

    def save(self, reg: Registration) -> None:
        write_private(self.registration_file, (json.dumps(asdict(reg), indent=2) + "\n").encode())


class CacheFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def key_file(self) -> Path:
        return self.root / "key.wrapped"

    @property
    def checksum_store(self) -> Path:
        return self.root / "checksums.sqlite"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def lock_file(self) -> Path:
        return self.root / "job.lock"

    @property
    def jobs_db(self) -> Path:
        return self.root / "jobs.sqlite"

    def ensure(self) -> None:
        for p in (self.root, self.logs):
            p.mkdir(parents=True, exist_ok=True, mode=0o700)
            p.chmod(0o700)  # also when the folder existed: it holds path names and the wrapped key
