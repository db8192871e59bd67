"""Restore grants this machine holds for other machines' data (HOME/grants/NAME.json, 0600), kept until they
expire so that a second try of a restore does not need a new credentials file."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from safehold.agent.home import AgentHome, read_private, write_private

GRANT_DAYS_NS = 24 * 3600 * 10**9
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Grant:
    machine_id: str
    hostname: str
    token: str
    expires_ns: int


def _path(home: AgentHome, name: str) -> Path:
    return home.root / "grants" / (_SAFE.sub("_", name)[:100] + ".json")


def save(home: AgentHome, name: str, grant: Grant) -> None:
    write_private(_path(home, name), json.dumps(asdict(grant)).encode())


def load(home: AgentHome, name: str, now_ns: int) -> Grant | None:
    """The grant saved for `name`, unless it is missing, damaged or within a minute of its end."""
    try:
        grant = Grant(**json.loads(read_private(_path(home, name))))
    except (OSError, ValueError, TypeError):
        return None
    return grant if grant.expires_ns > now_ns + 60 * 10**9 else None
