"""Wiring for commands: find the agent folder, connect to the vault the registration names, open keys.

The only place that chooses an adapter for the vault client.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from safehold.agent import settings as agent_settings
from safehold.agent.home import AgentHome, CacheFolder, Registration, default_home, read_private
from safehold.agent.registration import local_hostname, open_keys, open_stored_keys
from safehold.errors import raise_error
from safehold.formats.credentials import VaultCredentials
from safehold.formats.keys import MachineKeys
from safehold.model import MachineId, RecoveryPoint
from safehold.ports import VaultClient
from safehold.vault.service import VaultService


def vault_folder(url: str) -> Path:
    parsed = urlparse(url)
    return Path(unquote(parsed.path))


def remote(home: AgentHome, url: str, fingerprint: str | None, token: str | None) -> VaultClient:
    if not fingerprint:
        raise_error("VaultCredentialsInvalid", reason="the registration names a vault server without a TLS "
                                                      "fingerprint")
    from safehold.agent.remote import RemoteVault  # noqa: PLC0415 - httpx loads only for a vault server

    s = agent_settings.load(home)
    return RemoteVault(url, fingerprint, token=token, hostname=local_hostname(), proxy=s.proxy,
                       proxy_auth=agent_settings.proxy_auth(home, s), use_env=not s.no_proxy)


def connect_for_registration(home: AgentHome, creds: VaultCredentials, token: str | None) -> VaultClient:
    if creds.url.startswith("file://"):
        return VaultService.open_folder(vault_folder(creds.url))
    return remote(home, creds.url, creds.tls_fingerprint, token)


def connect(home: AgentHome, reg: Registration) -> VaultClient:
    """The vault of a registration, as this machine: the vault checks the token and the host name."""
    if reg.vault_url.startswith("file://"):
        svc = VaultService.open_folder(vault_folder(reg.vault_url))
        svc.authenticate(home.token(), local_hostname())
        return svc
    return remote(home, reg.vault_url, reg.tls_fingerprint, home.token())


def read_passphrase_file(path: str) -> str:
    try:
        data = read_private(Path(path))
    except FileNotFoundError:
        raise_error("PassphraseMissing", detail=f"{path} does not exist")
    except OSError as exc:
        raise_error("PassphraseMissing", detail=f"{path}: {exc.strerror}")
    try:
        return data.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        raise_error("PassphraseTooWeak", reason="only printable ASCII characters (32-126) are allowed")


def prompt_passphrase(confirm: bool, label: str | None = None) -> str:
    if not sys.stdin.isatty():
        raise_error("PassphraseMissing")
    first = getpass.getpass(label or "Passphrase: ")
    if confirm and getpass.getpass("Passphrase again: ") != first:
        raise_error("InvalidArgument", what="the two passphrases differ")
    return first


@dataclass
class Agent:
    home: AgentHome
    reg: Registration
    vault: VaultClient
    keys: MachineKeys

    @property
    def machine_id(self) -> MachineId:
        return MachineId(self.reg.machine_id)

    @property
    def cache(self) -> CacheFolder:
        return self.reg.cache


def agent_home(home_dir: str | None) -> AgentHome:
    """The agent folder: --home / SAFEHOLD_HOME, else the default for this user."""
    return AgentHome(Path(home_dir) if home_dir else default_home())


def load_agent(home_dir: str | None, passphrase_file: str | None = None) -> Agent:
    home = agent_home(home_dir)
    reg = home.load()
    vault = connect(home, reg)
    env_file = passphrase_file or os.environ.get("SAFEHOLD_PASSPHRASE_FILE")
    if env_file:
        return Agent(home, reg, vault, open_keys(reg, read_passphrase_file(env_file)))
    keys = open_stored_keys(home, reg)
    return Agent(home, reg, vault, keys or open_keys(reg, prompt_passphrase(confirm=False)))


def resolve_rp(agent: Agent, ref: str) -> RecoveryPoint:
    """A recovery point by id, unique id prefix (at least 4 characters) or `latest`."""
    return pick_rp(agent.vault.recovery_points(agent.machine_id), ref)


def connect_with_token(agent: Agent, token: str) -> VaultClient:
    """The agent's vault reached with another token (a restore grant); the embedded vault needs none."""
    if agent.reg.vault_url.startswith("file://"):
        return agent.vault
    return remote(agent.home, agent.reg.vault_url, agent.reg.tls_fingerprint, token)


def pick_rp(rps: list[RecoveryPoint], ref: str) -> RecoveryPoint:
    if ref == "latest":
        if not rps:
            raise_error("RecoveryPointNotFound", rp=ref)
        return rps[-1]
    matches = [rp for rp in rps if rp.rp_id.startswith(ref.lower())] if len(ref) >= 4 else []
    if len(matches) != 1:
        raise_error("RecoveryPointNotFound", rp=ref,
                    detail="the prefix matches several" if len(matches) > 1 else None)
    return matches[0]
