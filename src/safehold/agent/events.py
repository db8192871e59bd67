"""Events the engines emit while they work; renderers in the CLI turn them into text or JSON lines.

Engines never print: they call an `EventSink` with these values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


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
