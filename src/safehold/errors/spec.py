"""The shape of one catalog entry and the exception that carries it.

Not the entries themselves: those live in `errors.catalog` (from the MARS article) and `errors.own`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorSpec:
    """One stable error: id and code never change once released."""

    id: int
    code: str
    message: str
    causes: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    exit_code: int = 1
    http_status: int = 500
    retryable: bool = False
    hex_id: bool = False
    kind: str = "error"  # "error" for operations, "file" for per-file codes in failed-file lists
    # Named sets of actions for distinct situations behind one id (100050 through a proxy asking 407, ...).
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def actions_for(self, variant: str | None) -> tuple[str, ...]:
        for name, actions in self.variants:
            if name == variant:
                return actions
        return self.actions

    @property
    def id_text(self) -> str:
        return f"0x{self.id:X}" if self.hex_id else str(self.id)


@dataclass
class SafeholdError(Exception):
    """An error the user sees: a catalog entry plus the facts of this occurrence."""

    spec: ErrorSpec
    params: dict[str, Any] = field(default_factory=dict)
    detail: str | None = None
    variant: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.text)

    @property
    def text(self) -> str:
        try:
            text = self.spec.message.format(**self.params)
        except (KeyError, IndexError, ValueError):
            text = self.spec.message
        if self.detail:
            text = f"{text} ({self.detail})"
        return text

    @property
    def exit_code(self) -> int:
        return self.spec.exit_code

    @property
    def actions(self) -> tuple[str, ...]:
        return self.spec.actions_for(self.variant)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.spec.id_text,
            "code": self.spec.code,
            "message": self.text,
            "causes": list(self.spec.causes),
            "actions": list(self.actions),
            "params": {k: str(v) for k, v in self.params.items()},
            "detail": self.detail,
            "variant": self.variant,
            "retryable": self.spec.retryable,
        }

    def __str__(self) -> str:
        return f"[{self.spec.id_text} {self.spec.code}] {self.text}"
