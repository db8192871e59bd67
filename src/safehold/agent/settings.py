"""The agent's own settings (HOME/settings.json): how it reaches the vault and how fast it may upload.

Secrets live in 0600 files beside it. Not the policy (what to back up and when): that is policy.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from urllib.parse import urlsplit

from safehold.agent.home import AgentHome, read_private, write_private
from safehold.agent.throttle import Limits, parse_days, parse_hours
from safehold.errors import raise_error


@dataclass(frozen=True)
class AgentSettings:
    proxy: str | None = None  # http://host:port; None: the HTTPS_PROXY / NO_PROXY environment decides
    proxy_user: str | None = None  # its password is in HOME/proxy.password (0600)
    no_proxy: bool = False  # connect directly even when the environment names a proxy
    # upload bandwidth limits (bits per second); None: no throttling
    throttle_work_bps: int | None = None
    throttle_other_bps: int | None = None
    work_hours: str = "09:00-18:00"
    work_days: str = "mon-fri"

    @staticmethod
    def check_proxy(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.username or parts.password or \
                parts.path not in ("", "/"):
            raise_error("InvalidArgument", what="--proxy takes http://HOST:PORT (credentials go in --proxy-user and "
                                                "--proxy-password-file, never in the URL)")
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            raise_error("InvalidArgument", what="--proxy needs a port: http://HOST:PORT")
        return f"http://{parts.hostname}:{port}"


def load(home: AgentHome) -> AgentSettings:
    try:
        doc = json.loads(home.settings_file.read_text())
        known = {f.name for f in fields(AgentSettings)}
        return AgentSettings(**{k: v for k, v in doc.items() if k in known})
    except FileNotFoundError:
        return AgentSettings()
    except (ValueError, TypeError) as exc:
        raise_error("ProxySettingsInvalid", detail=f"{home.settings_file} is damaged ({exc})")


def save(home: AgentHome, settings: AgentSettings) -> None:
    write_private(home.settings_file, (json.dumps(asdict(settings), indent=2) + "\n").encode())


def limits(settings: AgentSettings) -> Limits | None:
    """The upload limits in force, or None when uploads are not throttled."""
    if settings.throttle_work_bps is None or settings.throttle_other_bps is None:
        return None
    start, end = parse_hours(settings.work_hours)
    return Limits(settings.throttle_work_bps, settings.throttle_other_bps, start, end, parse_days(settings.work_days))


def proxy_auth(home: AgentHome, settings: AgentSettings) -> tuple[str, str] | None:
    if not settings.proxy_user:
        return None
    try:
        password = read_private(home.proxy_password_file).decode("utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise_error("ProxySettingsInvalid", detail=f"a proxy user is set but {home.proxy_password_file} is missing")
    return settings.proxy_user, password


def set_proxy_password(home: AgentHome, password: str) -> None:
    write_private(home.proxy_password_file, password.encode("utf-8") + b"\n")
