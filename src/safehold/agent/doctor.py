"""`safehold doctor`'s checks: the article's basic troubleshooting steps, run against this machine for real.

Each check returns findings (status, a translatable summary with its facts, and the catalog error that
explains a problem). The engine never prints and never picks an adapter: the CLI hands it the ways to reach
the vault.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import tempfile
import time
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from safehold import __version__
from safehold.agent import policyfile, probes
from safehold.agent.home import AgentHome, Registration, read_private
from safehold.agent.registration import local_hostname
from safehold.errors import SafeholdError, error
from safehold.formats import credentials as credfmt
from safehold.formats import keys as keyfmt
from safehold.i18n import N_
from safehold.model import MachineId, RecoveryPoint, VaultInfo
from safehold.ports import Clock, SystemClock, VaultClient

OK, WARNING, FAILED, SKIPPED = "ok", "warning", "failed", "skipped"
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "fuse.sshfs", "davfs",
              "fuse.s3fs", "fuse.rclone", "lustre"}
SKEW_FAIL_S = 300
SKEW_WARN_S = 60
TEMP_FILES_LIMIT = 60_000
MIN_FREE = 64 * 1024 * 1024
LOW_SPACE = N_("{free} free for the cache folder; backing up {protected} needs 5 to 10 percent of it.")
SYSTEMD_UNITS = (Path("/etc/systemd/system/safehold-agent.service"), Path("/lib/systemd/system/safehold-agent.service"))


@dataclass(frozen=True)
class Finding:
    check: str  # stable name scripts can match on
    status: str  # ok | warning | failed | skipped
    summary: str  # English msgid, translated when shown; {placeholders} filled from params
    params: dict[str, Any] = field(default_factory=dict)
    error: SafeholdError | None = None


@dataclass
class Doctor:
    home: AgentHome
    connect: Callable[[Registration], VaultClient]  # as this machine, with its token
    passphrase: Callable[[], str | None]
    proxy: str | None = None  # the proxy the agent would use, without credentials
    credentials_file: Path | None = None
    daemon_pid_file: Path | None = None
    clock: Clock = field(default_factory=SystemClock)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    _reg: Registration | None = None
    _vault: VaultClient | None = None
    _info: VaultInfo | None = None
    _vault_clock: float | None = None
    _latest: RecoveryPoint | None = None

    def run(self) -> Iterator[Finding]:
        try:
            yield from self._checks()
        finally:
            close = getattr(self._vault, "close", None)  # a vault server's connection
            if callable(close):
                close()

    def _checks(self) -> Iterator[Finding]:
        yield from self._registration()
        if self._reg is None:
            return
        yield from self._reach()
        yield from self._proxy()
        yield from self._version()
        yield from self._identity()
        yield from self._daemon()
        yield from self._cache()
        yield from self._key()
        yield from self._checksums()
        yield from self._clock()
        yield from self._credentials()
        yield from self._temp()
        yield from self._holders()

    # ---- registration and vault --------------------------------------------------------------------------

    def _registration(self) -> Iterator[Finding]:
        try:
            self._reg = self.home.load()
        except SafeholdError as exc:
            yield Finding("registration", FAILED, N_("This machine is not registered."), error=exc)
            return
        yield Finding("registration", OK, N_("Registered as {host} (machine {machine}) with vault {vault}."),
                      {"host": self._reg.hostname, "machine": self._reg.machine_id[:8],
                       "vault": self._reg.vault_name})

    def _reach(self) -> Iterator[Finding]:
        reg = self._reg
        assert reg is not None
        url = reg.vault_url
        if url.startswith("https://"):
            parts = urlsplit(self.proxy or url)
            host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
            what = N_("proxy") if self.proxy else N_("vault")
            try:
                addrs = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                yield Finding("vault", FAILED, N_("The {what} host {host} does not resolve."),
                              {"what": what, "host": host},
                              error("ProxySettingsInvalid" if self.proxy else "VaultUnreachable",
                                    detail=f"DNS: {exc}", url=url))
                return
            try:
                with socket.create_connection((str(addrs[0][4][0]), port), timeout=10):
                    pass
            except OSError as exc:
                err = error("VaultUnreachable", detail=f"TCP {host}:{port}: {exc}", url=url,
                            variant="proxy" if self.proxy else None)
                yield Finding("vault", FAILED, N_("No TCP connection reaches the {what} at {host}:{port}."),
                              {"what": what, "host": host, "port": port}, err)
                return
        started = time.monotonic()
        try:
            self._vault = self.connect(reg)
            probe = getattr(self._vault, "probe", None)  # a vault server also tells its clock
            if callable(probe):
                self._info, self._vault_clock = probe()
            else:
                self._info = self._vault.info()
            rps = self._vault.recovery_points(MachineId(reg.machine_id))
            self._latest = rps[-1] if rps else None
        except SafeholdError as exc:
            close = getattr(self._vault, "close", None)
            if callable(close):
                close()
            self._vault = None
            yield Finding("vault", FAILED, N_("The vault did not answer as it should."), error=exc)
            return
        yield Finding("vault", OK, N_("The vault {name} answered in {ms} ms."),
                      {"name": self._info.name, "ms": round((time.monotonic() - started) * 1000)})

    def _proxy(self) -> Iterator[Finding]:
        if not self.proxy:
            yield Finding("proxy", SKIPPED, N_("No proxy is configured; the agent connects directly."))
            return
        if self._vault is None:
            yield Finding("proxy", SKIPPED, N_("The proxy {proxy} was not tested further: the vault check failed."),
                          {"proxy": self.proxy})
            return
        yield Finding("proxy", OK, N_("The proxy {proxy} passes requests to the vault (authentication accepted)."),
                      {"proxy": self.proxy})

    def _version(self) -> Iterator[Finding]:
        if self._info is None:
            yield Finding("version", SKIPPED, N_("The agent's version could not be compared: the vault check failed."))
            return
        if _version_key(__version__) < _version_key(self._info.version):
            yield Finding("version", WARNING, N_("This agent is {agent}; the vault runs {vault}."),
                          {"agent": __version__, "vault": self._info.version},
                          error("AgentOutdated", detail=f"agent {__version__}, vault {self._info.version}"))
            return
        yield Finding("version", OK, N_("Agent {agent}, vault {vault}."),
                      {"agent": __version__, "vault": self._info.version})

    def _identity(self) -> Iterator[Finding]:
        reg = self._reg
        assert reg is not None
        now = local_hostname()
        if now != reg.hostname:
            yield Finding("hostname", FAILED, N_("The host name is {now}, but the machine was registered as {then}."),
                          {"now": now, "then": reg.hostname},
                          error("ServerRenamed", detail=f"registered as {reg.hostname!r}, now {now!r}"))
            return
        yield Finding("hostname", OK, N_("The host name {host} matches the registration."), {"host": now})

    # ---- the daemon and the schedule --------------------------------------------------------------------

    def _daemon(self) -> Iterator[Finding]:
        pid_file = self.daemon_pid_file or self.home.root / "agent.pid"
        pid = probes.live_pid(pid_file)
        has_schedule = self._has_schedule()
        scheduled = has_schedule or any(u.exists() for u in SYSTEMD_UNITS)
        if pid is not None:
            yield Finding("daemon", OK, N_("The agent daemon runs (process {pid})."), {"pid": pid})
        elif scheduled:
            yield Finding("daemon", FAILED, N_("The agent daemon is not running, so nothing runs on a schedule."),
                          error=error("AgentDaemonNotRunning", detail=f"no live process in {pid_file}"))
        else:
            yield Finding("daemon", SKIPPED, N_("No daemon is set up; backups run only when started by hand."))
        if not has_schedule:
            yield Finding("schedule", SKIPPED, N_("No backup schedule is set up on this machine."))
        elif pid is None:
            yield Finding("schedule", FAILED, N_("A schedule is set up, but no daemon runs it."),
                          error=error("ScheduleNotRunning"))
        else:
            yield Finding("schedule", OK, N_("A schedule is set up and the daemon runs it."))

    def _has_schedule(self) -> bool:
        """A policy with a schedule; a damaged policy file counts as one (the daemon would stumble on it)."""
        try:
            p = policyfile.load(self.home)
        except (SafeholdError, OSError):
            return self.home.policy_file.exists()
        return p is not None and p.schedule is not None

    # ---- the cache folder -----------------------------------------------------------------------------------

    def _cache(self) -> Iterator[Finding]:
        reg = self._reg
        assert reg is not None
        cache = Path(reg.cache_folder)
        if not cache.is_dir():
            yield Finding("cache", FAILED, N_("The cache folder {path} does not exist."), {"path": str(cache)},
                          error("CacheFolderInvalid", reason=f"{cache} does not exist"))
            return
        probe = cache / f".doctor-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"safehold doctor")
            probe.unlink()
        except OSError as exc:
            yield Finding("cache", FAILED, N_("The cache folder {path} is not writable."), {"path": str(cache)},
                          error("CacheFolderInvalid", reason=f"writing to {cache} fails: {exc.strerror}"))
            return
        fstype = probes.fs_type(cache)
        if fstype in NETWORK_FS:
            yield Finding("cache", WARNING, N_("The cache folder {path} is on a network file system ({fs})."),
                          {"path": str(cache), "fs": fstype},
                          error("CacheFolderInvalid", reason=f"{cache} is on {fstype}, not a local disk"))
        else:
            yield Finding("cache", OK, N_("The cache folder {path} is local ({fs}) and writable."),
                          {"path": str(cache), "fs": fstype or "?"})
        st = os.statvfs(cache)
        free = st.f_bavail * st.f_frsize
        protected = self._latest.stats.bytes_scanned if self._latest else 0
        params = {"free": _size(free), "protected": _size(protected), "path": str(cache)}
        if free < MIN_FREE or free < protected * 5 // 100:
            yield Finding("space", FAILED, LOW_SPACE, params,
                          error("SalLowDiskSpace", detail=f"{_size(free)} free on {cache}"))
        elif free < protected * 10 // 100:
            yield Finding("space", WARNING, LOW_SPACE, params,
                          error("SalLowDiskSpace", detail=f"{_size(free)} free on {cache}"))
        else:
            yield Finding("space", OK, N_("{free} free for the cache folder ({protected} protected)."), params)

    def _key(self) -> Iterator[Finding]:
        reg = self._reg
        assert reg is not None
        key_file = reg.cache.key_file
        try:
            data = read_private(key_file)
        except FileNotFoundError:
            yield Finding("key", FAILED, N_("The key file {path} is missing."), {"path": str(key_file)},
                          error("PassphraseNotConfigured", detail=f"{key_file} is missing"))
            return
        except SafeholdError as exc:
            yield Finding("key", FAILED, N_("The key file {path} is not private."), {"path": str(key_file)}, exc)
            return
        passphrase = self.passphrase()
        if passphrase is None:
            yield Finding("key", SKIPPED, N_("The key file is present; no passphrase was given to open it."))
            return
        try:
            keys = keyfmt.unwrap(data, passphrase)
        except SafeholdError as exc:
            yield Finding("key", FAILED, N_("The key file {path} does not open."), {"path": str(key_file)}, exc)
            return
        if keys.key_id != reg.key_id:
            yield Finding("key", FAILED, N_("The key file {path} belongs to another registration."),
                          {"path": str(key_file)},
                          error("PassphraseNotConfigured", detail="the key file belongs to another registration"))
            return
        yield Finding("key", OK, N_("The key file is present and opens with the passphrase."))

    def _checksums(self) -> Iterator[Finding]:
        reg = self._reg
        assert reg is not None
        path = reg.cache.checksum_store
        if not path.exists():
            yield Finding("checksums", OK, N_("No checksum store yet; the first backup creates it."))
            return
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                result = db.execute("PRAGMA quick_check").fetchone()[0]
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            result = str(exc)
        if result != "ok":
            yield Finding("checksums", FAILED, N_("The checksum store {path} is damaged."), {"path": str(path)},
                          error("SalChecksumStoreInitializationFailed", detail=result))
            return
        yield Finding("checksums", OK, N_("The checksum store is healthy."))

    # ---- clock, credentials, temporary files, other processes ------------------------------------------

    def _clock(self) -> Iterator[Finding]:
        tz = os.environ.get("TZ")
        if tz:
            try:
                zoneinfo.ZoneInfo(tz.lstrip(":"))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                yield Finding("timezone", WARNING, N_("The time zone {tz} in TZ is not known."), {"tz": tz},
                              error("ClockSkew", detail=f"TZ={tz} is not a known zone"))
            else:
                yield Finding("timezone", OK, N_("The time zone is {tz}."), {"tz": tz})
        elif not Path("/etc/localtime").exists():
            yield Finding("timezone", WARNING, N_("No time zone is set (/etc/localtime is missing)."),
                          error=error("ClockSkew", detail="/etc/localtime is missing"))
        else:
            yield Finding("timezone", OK, N_("The time zone is {tz}."), {"tz": time.tzname[0]})
        if self._vault_clock is None:
            yield Finding("clock", SKIPPED, N_("The vault gave no time to compare the clock with."))
            return
        skew = self.clock.now_ns() / 1e9 - self._vault_clock
        params = {"skew": f"{skew:+.0f}"}
        if abs(skew) > SKEW_FAIL_S:
            yield Finding("clock", FAILED, N_("This machine's clock is {skew} s off the vault's."), params,
                          error("ClockSkew", detail=f"{skew:+.0f} s against the vault"))
        elif abs(skew) > SKEW_WARN_S:
            yield Finding("clock", WARNING, N_("This machine's clock is {skew} s off the vault's."), params,
                          error("ClockSkew", detail=f"{skew:+.0f} s against the vault"))
        else:
            yield Finding("clock", OK, N_("The clock agrees with the vault's ({skew} s)."), params)

    def _credentials(self) -> Iterator[Finding]:
        if self.credentials_file is None:
            yield Finding("credentials", SKIPPED, N_("No credentials file was given to check (--credentials)."))
            return
        try:
            creds = credfmt.parse(self.credentials_file.name, self.credentials_file.read_bytes())
        except SafeholdError as exc:
            yield Finding("credentials", FAILED, N_("The credentials file {path} cannot be used."),
                          {"path": str(self.credentials_file)}, exc)
            return
        except OSError as exc:
            yield Finding("credentials", FAILED, N_("The credentials file {path} cannot be used."),
                          {"path": str(self.credentials_file)},
                          error("VaultCredentialsInvalid", reason=f"the file cannot be read ({exc.strerror})"))
            return
        left = (creds.expires_ns - self.clock.now_ns()) / 1e9
        params = {"path": str(self.credentials_file), "days": f"{left / 86400:.1f}"}
        if left <= 0:
            yield Finding("credentials", FAILED, N_("The credentials file {path} has expired."), params,
                          error("VaultCredentialsInvalid", reason="the file has expired"))
        elif self._reg is not None and creds.vault_id != self._reg.vault_id:
            yield Finding("credentials", FAILED, N_("The credentials file {path} is for another vault."), params,
                          error("VaultCredentialsWrongVault"))
        elif left < 86400:
            yield Finding("credentials", WARNING, N_("The credentials file {path} expires in {days} days."), params)
        else:
            yield Finding("credentials", OK, N_("The credentials file {path} is valid for {days} more days."), params)

    def _temp(self) -> Iterator[Finding]:
        reg = self._reg
        assert reg is not None
        for folder in (self.temp_dir, Path(reg.cache_folder)):
            try:
                with os.scandir(folder) as it:
                    count = sum(1 for _ in it)
                st = os.statvfs(folder)
            except OSError as exc:
                yield Finding("temp", WARNING, N_("The folder {path} cannot be read."), {"path": str(folder)},
                              error("TempFolderFull", detail=f"{folder}: {exc.strerror}"))
                continue
            free = st.f_bavail * st.f_frsize
            params = {"path": str(folder), "count": count, "free": _size(free)}
            if count > TEMP_FILES_LIMIT or free < MIN_FREE:
                yield Finding("temp", WARNING, N_("{path} holds {count} entries with {free} free."), params,
                              error("TempFolderFull", detail=f"{folder}: {count} entries, {_size(free)} free"))
            else:
                yield Finding("temp", OK, N_("{path} holds {count} entries with {free} free."), params)

    def _holders(self) -> Iterator[Finding]:
        reg = self._reg
        assert reg is not None
        cache = reg.cache
        holders = probes.processes_holding(cache.root)
        locked = probes.lock_holder(cache.lock_file)
        if locked and not holders:
            holders = [locked]
        if holders:
            shown = ", ".join(holders[:5])
            yield Finding("locks", WARNING, N_("Other processes hold files in the cache folder: {who}."),
                          {"who": shown}, error("CacheFolderBlocked", detail=shown))
            return
        yield Finding("locks", OK, N_("No other process holds files in the cache folder."))


def _version_key(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
