"""The one error catalog: every error and per-file code safehold reports, by stable id and code.

`raise_error("VaultCredentialsInvalid", reason=...)` is how code below the CLI reports a failure.
"""

from __future__ import annotations

from typing import Any, NoReturn

from safehold.errors import catalog, own
from safehold.errors.spec import ErrorSpec, SafeholdError

ALL: tuple[ErrorSpec, ...] = catalog.ENTRIES + own.ENTRIES
BY_CODE: dict[str, ErrorSpec] = {e.code: e for e in ALL}
BY_ID: dict[str, ErrorSpec] = {e.id_text.lower(): e for e in ALL}


def spec(code: str) -> ErrorSpec:
    return BY_CODE[code]


def error(code: str, detail: str | None = None, variant: str | None = None, **params: Any) -> SafeholdError:
    spec_ = BY_CODE[code]
    if variant is not None and variant not in {name for name, _ in spec_.variants}:
        raise ValueError(f"{code} has no variant {variant}")
    return SafeholdError(spec_, params, detail, variant)


def raise_error(code: str, detail: str | None = None, variant: str | None = None, **params: Any) -> NoReturn:
    raise error(code, detail, variant, **params)


def lookup(id_or_code: str) -> ErrorSpec | None:
    key = id_or_code.strip()
    return BY_CODE.get(key) or BY_ID.get(key.lower())


__all__ = ["ALL", "BY_CODE", "BY_ID", "ErrorSpec", "SafeholdError", "error", "lookup", "raise_error", "spec"]
