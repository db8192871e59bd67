"""When scheduled backups run: the policy's next time, and one catch-up run for times the machine missed.

The scheduler only decides and remembers (HOME/schedule.json: the newest scheduled time it has handled); the
daemon runs what it says. Time comes from an injected clock, so tests drive days in microseconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from safehold.agent.home import write_private
from safehold.formats import policy as policyfmt
from safehold.formats.policy import Policy
from safehold.ports import Clock

IDLE_CHECK_S = 60.0


def local_zone() -> dt.tzinfo:
    """The machine's time zone (TZ, /etc/timezone, the /etc/localtime link), UTC when it cannot be named."""
    name = local_zone_name()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def local_zone_name() -> str:
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        return tz
    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return name
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"  # without a schedule, or far from the next run: look again (policy edits, clock jumps)


@dataclass(frozen=True)
class Due:
    slot: dt.datetime  # the scheduled time this run stands for
    missed: int  # scheduled times that passed without a run, this one included (1 = on time)
    catch_up: bool


class Scheduler:
    def __init__(self, state_file: Path, clock: Clock, policy: Callable[[], Policy | None],
                 tz: dt.tzinfo | None = None, late_s: float = 300.0) -> None:
        self.state_file = state_file
        self.clock = clock
        self.policy = policy
        self.tz = tz if tz is not None else local_zone()  # a real zone: its offset changes with the season
        self.late_s = late_s  # a run starting later than this after its time counts as a catch-up

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock.now_ns() / 1e9, dt.UTC).astimezone(self.tz)

    # ---- state ------------------------------------------------------------------------------------------

    def last_handled(self) -> dt.datetime | None:
        try:
            doc = json.loads(self.state_file.read_text())
            return dt.datetime.fromtimestamp(int(doc["last_slot_ns"]) / 1e9, dt.UTC)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _remember(self, when: dt.datetime) -> None:
        ns = int(when.timestamp()) * 1_000_000_000
        write_private(self.state_file, json.dumps({"last_slot_ns": ns}).encode() + b"\n")

    # ---- decisions --------------------------------------------------------------------------------------

    def due(self) -> Due | None:
        """The run to start now, if any. Several missed times give one run, not a burst of them."""
        p = self.policy()
        if p is None or p.schedule is None:
            return None
        now = self.now()
        last = self.last_handled()
        if last is None:  # first start of the daemon: times before it are not owed
            self._remember(now)
            return None
        slots = list(policyfmt.runs_between(p.schedule, last.astimezone(now.tzinfo), now))
        if not slots:
            return None
        newest = slots[-1]
        late = now.timestamp() - newest.timestamp() > self.late_s
        return Due(newest, len(slots), len(slots) > 1 or late)

    def take(self) -> Due | None:
        """`due()`, marked as handled before it runs: a crash during the run never makes it run in a loop."""
        d = self.due()
        if d is not None:
            self._remember(d.slot)
        return d

    def next_time(self) -> dt.datetime | None:
        p = self.policy()
        if p is None or p.schedule is None:
            return None
        now = self.now()
        last = self.last_handled()
        after = now if last is None or last.timestamp() <= now.timestamp() else last.astimezone(self.tz)
        return policyfmt.next_run(p.schedule, after)

    def wait_s(self) -> float:
        """How long the daemon may sleep before it should look again."""
        nxt = self.next_time()
        if nxt is None:
            return IDLE_CHECK_S
        return max(0.0, min(IDLE_CHECK_S, nxt.timestamp() - self.now().timestamp()))
