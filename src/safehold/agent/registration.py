"""Registering this machine with a vault, and opening its key afterwards.

Registration rules (expiry, one-time use, newest file only, machine limit) are the vault's; this side checks
the file, the vault it names, and the passphrase.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from safehold import __version__
from safehold.agent.home import AgentHome, CacheFolder, Registration, read_private, write_private
from safehold.errors import raise_error
from safehold.formats import credentials as credfmt
from safehold.formats import keys as keyfmt
from safehold.formats.credentials import VaultCredentials
from safehold.formats.keys import MachineKeys
from safehold.model import MachineId, MachineInfo
from safehold.ports import Clock, SystemClock, VaultClient


def local_hostname() -> str:
    return os.environ.get("SAFEHOLD_HOSTNAME") or socket.gethostname()


def os_machine_id() -> str:
    try:
        return Path("/etc/machine-id").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def read_credentials(path: Path) -> VaultCredentials:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise_error("VaultCredentialsInvalid", reason=f"the file cannot be read ({exc.strerror})")
    if len(data) > 64 * 1024:
        raise_error("VaultCredentialsInvalid", reason="the file is too large to be a credentials file")
    return credfmt.parse(path.name, data)


def register(home: AgentHome, creds_path: Path, passphrase: str,
             connect: Callable[[VaultCredentials, str | None], VaultClient],
             cache_folder: Path | None = None, clock: Clock | None = None) -> Registration:
    """Register, or re-register (same machine id and key, new host name and token) when already registered.

    `connect(creds, token)` gives a client of the vault the file names; `token` is the current one, if any.
    """
    creds = read_credentials(creds_path)
    existing = home.load_optional()
    if existing is not None and existing.vault_id != creds.vault_id:
        raise_error("VaultCredentialsWrongVault",
                    detail=f"registered with vault {existing.vault_name} ({existing.vault_id[:8]}), "
                           f"file is for {creds.vault_name} ({creds.vault_id[:8]})")
    if (clock or SystemClock()).now_ns() >= creds.expires_ns:
        raise_error("VaultCredentialsInvalid", reason="the file has expired")
    keyfmt.check_passphrase(passphrase)

    proof: bytes | None = None
    if existing is not None:
        # Re-registration keeps the machine's identity and key: the passphrase must be the one first used,
        # and the vault checks a proof derived from the key, so neither passphrase nor key leaves the machine.
        cache = CacheFolder(Path(cache_folder or existing.cache_folder))
        if cache.key_file.exists():
            wrapped = cache.key_file.read_bytes()
        else:
            token = home.token() if home.token_file.exists() else None
            wrapped = connect(creds, token).wrapped_key(MachineId(existing.machine_id))
        keys = keyfmt.unwrap(wrapped, passphrase)
        machine_id = existing.machine_id
        proof = keys.auth_key
    else:
        cache = CacheFolder(cache_folder or home.root / "cache")
        keys = MachineKeys.generate()
        machine_id = uuid.uuid4().hex
    wrapped = keyfmt.wrap(keys, passphrase)
    machine = MachineInfo(MachineId(machine_id), local_hostname(), os_machine_id(), __version__)
    token = connect(creds, None).register(creds, machine, wrapped, keys.key_verifier, proof)

    cache.ensure()
    write_private(cache.key_file, wrapped)
    write_private(home.token_file, token.encode())
    write_private(home.passphrase_file, passphrase.encode())
    write_private(home.key_cache_file, keyfmt.seal_cached(keys, passphrase))
    reg = Registration(
        vault_id=creds.vault_id, vault_name=creds.vault_name, vault_url=creds.url, machine_id=machine_id,
        hostname=machine.hostname, os_machine_id=machine.os_machine_id,
        cache_folder=str(cache.root.absolute()), key_id=keys.key_id,
        registered_ns=(clock or SystemClock()).now_ns(), tls_fingerprint=creds.tls_fingerprint)
    home.save(reg)
    return reg


def stored_passphrase(home: AgentHome) -> str | None:
    if not home.passphrase_file.exists():
        return None
    return read_private(home.passphrase_file).decode("ascii", errors="replace").rstrip("\n")


def open_stored_keys(home: AgentHome, reg: Registration) -> MachineKeys | None:
    """The keys opened with the stored passphrase, None when none is stored. The unlocked-key cache beside
    the passphrase spares the Argon2id derivation; without the passphrase file the cache is not used (and
    removed), and a cache that does not open with it is rebuilt from the wrapped key."""
    passphrase = stored_passphrase(home)
    if passphrase is None:
        with contextlib.suppress(FileNotFoundError):
            home.key_cache_file.unlink()
        return None
    try:
        cached = read_private(home.key_cache_file)
    except FileNotFoundError:
        cached = b""
    keys = keyfmt.open_cached(cached, passphrase, reg.key_id)
    if keys is not None:
        _wrapped_key(reg)  # the wrapped key must still be there and sound: it is what restores elsewhere
        return keys
    keys = open_keys(reg, passphrase)
    with contextlib.suppress(OSError):
        write_private(home.key_cache_file, keyfmt.seal_cached(keys, passphrase))
    return keys


def open_keys(reg: Registration, passphrase: str) -> MachineKeys:
    """Unwrap the machine key from the cache folder; a missing or damaged file is error 34506."""
    keys = keyfmt.unwrap(_wrapped_key(reg), passphrase)
    if keys.key_id != reg.key_id:
        raise_error("PassphraseNotConfigured", detail="the key file belongs to another registration")
    return keys


def _wrapped_key(reg: Registration) -> bytes:
    """The wrapped key file's bytes, checked for form and owner; missing or damaged is error 34506."""
    cache = reg.cache
    try:
        data = read_private(cache.key_file)
    except FileNotFoundError:
        raise_error("PassphraseNotConfigured", detail=f"{cache.key_file} is missing")
    if keyfmt.parse(data).key_id != reg.key_id:
        raise_error("PassphraseNotConfigured", detail="the key file belongs to another registration")
    return data


def open_other_machine(vault: VaultClient, creds_path: Path, source: str, passphrase: str,
                       grantee: MachineId) -> tuple[MachineInfo, MachineKeys, str]:
    """Another machine of the same vault, to restore its data here: its identity, its key (opened with its
    passphrase, here), and a read-only token for its data. Needs a credentials file, which this uses up."""
    creds = read_credentials(creds_path)
    info, wrapped = vault.recovery_source(creds, source, grantee)
    keys = keyfmt.unwrap(wrapped, passphrase)
    token = vault.grant_recovery(creds, info.machine_id, grantee, keys.auth_key)
    return info, keys, token
