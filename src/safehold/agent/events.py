"""Events the engines emit while they work; renderers in the CLI turn them into text or JSON lines.

Engines never print: they call an `EventSink` with these values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True)
class Progress:
    phase: str
    files: int
    bytes_done: int
    bytes_total: int | None
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.bytes_done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.bytes_total or self.rate <= 0 or self.bytes_done > self.bytes_total:
            return None
        return (self.bytes_total - self.bytes_done) / self.rate


@dataclass(frozen=True)
class ItemFailed:
    path: bytes
    code: str
    reason: str


@dataclass(frozen=True)
class Notice:
    code: str
    text: str


Event = Progress | ItemFailed | Notice
EventSink = Callable[[Event], None]


def discard(_event: Event) -> None:
    pass


class ProgressClock:
    """When an engine's next progress event is due: at most one per PROGRESS_EVERY_S, the first at once."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self._next = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def due(self, force: bool = False) -> float | None:
        """Seconds since the start when an event is due now, else None."""
        now = time.monotonic()
        if not force and now < self._next:
            return None
        self._next = now + PROGRESS_EVERY_S
        return now - self.t0
