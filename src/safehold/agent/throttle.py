"""Upload bandwidth limits: one rate in work hours on work days, another outside them (MARS's throttling).

`Pacer` spaces uploads so that the rate stays under the limit in force: the 1 MiB pieces of a pack sent to a
vault server, or whole packs written to an embedded vault; `PacedVault` puts it in front of any vault client.
Clock and sleep are injected, so tests never wait.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from safehold.errors import raise_error
from safehold.formats.policy import WEEKDAYS
from safehold.model import MachineId, PackEntry, PackId
from safehold.ports import VaultClient

MIN_BPS = 512 * 1000  # 512 Kbps
MAX_BPS = 1023 * 1000 * 1000  # 1,023 Mbps
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*(kbps|mbps|gbps)$", re.IGNORECASE)
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$")
_UNITS = {"kbps": 1000, "mbps": 1000 * 1000, "gbps": 1000 * 1000 * 1000}


def parse_rate(text: str) -> int:
    """"4Mbps", "512Kbps", "1.5Gbps" → bits per second, within 512 Kbps..1,023 Mbps."""
    m = _RATE.match(text.strip())
    if not m:
        raise_error("InvalidArgument", what=f"bandwidth {text!r}: give a number and Kbps, Mbps or Gbps, as 4Mbps")
    bps = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if not MIN_BPS <= bps <= MAX_BPS:
        raise_error("InvalidArgument", what=f"bandwidth {text}: it must be between 512Kbps and 1023Mbps")
    return bps


def show_rate(bps: int) -> str:
    if bps >= 1_000_000 and bps % 1000_000 == 0:
        return f"{bps // 1_000_000}Mbps"
    if bps >= 1_000_000:
        return f"{bps / 1_000_000:.1f}Mbps"
    return f"{bps // 1000}Kbps"


def parse_hours(text: str) -> tuple[int, int]:
    """"09:00-18:00" → minutes of the day (start, end), start before end."""
    m = _HOURS.match(text.strip())
    if not m:
        raise_error("InvalidArgument", what=f"work hours {text!r}: give HH:MM-HH:MM, as 09:00-18:00")
    start, end = int(m.group(1)) * 60 + int(m.group(2)), int(m.group(3)) * 60 + int(m.group(4))
    if not 0 <= start < end <= 24 * 60:
        raise_error("InvalidArgument", what=f"work hours {text}: the start must come before the end")
    return start, end


def parse_days(text: str) -> tuple[str, ...]:
    """"mon-fri" or "mon,wed,fri" → weekday names in week order."""
    days: set[str] = set()
    for part in text.lower().replace(" ", "").split(","):
        a, _, b = part.partition("-")
        if a not in WEEKDAYS or (b and b not in WEEKDAYS):
            raise_error("InvalidArgument", what=f"work days {text!r}: use mon..sun, as mon-fri or mon,wed,fri")
        i, j = WEEKDAYS.index(a), WEEKDAYS.index(b or a)
        if j < i:
            raise_error("InvalidArgument", what=f"work days {text!r}: a range goes forward in the week")
        days.update(WEEKDAYS[i:j + 1])
    return tuple(d for d in WEEKDAYS if d in days)


@dataclass(frozen=True)
class Limits:
    work_bps: int
    other_bps: int
    work_start_min: int = 9 * 60
    work_end_min: int = 18 * 60
    work_days: tuple[str, ...] = WEEKDAYS[:5]

    def rate_at(self, when: dt.datetime) -> int:
        minute = when.hour * 60 + when.minute
        work = WEEKDAYS[when.weekday()] in self.work_days and self.work_start_min <= minute < self.work_end_min
        return self.work_bps if work else self.other_bps


class Pacer:
    """Leaky bucket over whole packs: each pack reserves size/rate seconds of the link after the previous one."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] | None = None, tz: dt.tzinfo | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.limits = limits
        self.clock = clock
        self.cancel = cancel or threading.Event()
        self.sleep = sleep or self._wait
        self.tz = tz
        self._free_at = 0.0
        self.waited_s = 0.0

    def _wait(self, seconds: float) -> None:
        """Sleep, unless the job is cancelled meanwhile: then the upload is abandoned at once."""
        if self.cancel.wait(seconds):
            raise KeyboardInterrupt

    def before_send(self, nbytes: int) -> None:
        now = self.clock()
        if self._free_at > now:
            self.sleep(self._free_at - now)
            self.waited_s += self._free_at - now
            now = self._free_at
        local = dt.datetime.fromtimestamp(now, dt.UTC).astimezone(self.tz)
        self._free_at = now + nbytes * 8 / self.limits.rate_at(local)


class PacedVault:
    """A vault client whose pack uploads go through a Pacer; everything else passes straight through."""

    def __init__(self, inner: VaultClient, pacer: Pacer) -> None:
        self._inner = inner
        self.pacer = pacer
        # A vault server's client streams a pack in pieces: space the pieces, so that a pack never goes out
        # at full speed. Other clients (the embedded vault) are paced pack by pack.
        self._streams = hasattr(inner, "pace")
        if self._streams:
            inner.pace = pacer.before_send  # type: ignore[attr-defined]

    def put_pack(self, machine_id: MachineId, session: str, pack_id: PackId, data: bytes | memoryview,
                 entries: list[PackEntry]) -> None:
        if not self._streams:
            self.pacer.before_send(len(data))
        self._inner.put_pack(machine_id, session, pack_id, data, entries)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def paced(inner: VaultClient, pacer: Pacer) -> VaultClient:
    return cast(VaultClient, PacedVault(inner, pacer))
