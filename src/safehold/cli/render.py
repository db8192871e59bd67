"""Turning engine events, results and errors into terminal text or JSON lines.

Text goes to stderr for progress and errors, stdout for results; `--json` writes one JSON object per line
to stdout.
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from typing import Any

import click

from safehold.agent.events import Event, ItemFailed, Notice, Progress
from safehold.errors import SafeholdError, spec
from safehold.i18n import N_, _

PHASES = (N_("backup"), N_("check"), N_("restore"))  # progress lines name their job's phase


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_time(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def path_text(p: bytes) -> str:
    return p.decode("utf-8", "backslashreplace")


def width(text: str) -> int:
    """Columns a text takes on a terminal: wide (East Asian) characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1 for c in text)


def table(rows: list[tuple[str, ...]], right: frozenset[int] = frozenset()) -> list[str]:
    """Lines of a plain table, columns two spaces apart, padded by display width (`right`: right-aligned)."""
    widths = [max(width(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [(" " * (w - width(c)) + c) if i in right else (c + " " * (w - width(c)))
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
    return out


def emit_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


class EventRenderer:
    """An EventSink: progress on one updating stderr line (terminals only), failures as they happen."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stderr.isatty()
        self._line = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress):
            if self.as_json:
                emit_json({"event": "progress", "phase": event.phase, "items": event.files,
                           "bytes": event.bytes_done, "bytes_total": event.bytes_total,
                           "rate_bps": round(event.rate), "eta_s": None if event.eta_s is None
                           else round(event.eta_s, 1), "elapsed_s": round(event.elapsed_s, 2)})
            elif self.tty:
                eta = _(", ETA {seconds} s").format(seconds=f"{event.eta_s:.0f}") if event.eta_s is not None else ""
                total = _(" of {total}").format(total=human_bytes(event.bytes_total)) if event.bytes_total else ""
                line = _("{phase}: {items} items, {done}{total}, {rate}/s{eta}").format(
                    phase=_(event.phase), items=event.files, done=human_bytes(event.bytes_done), total=total,
                    rate=human_bytes(event.rate), eta=eta)
                sys.stderr.write(f"\r\x1b[2K{line}")
                sys.stderr.flush()
                self._line = True
        elif isinstance(event, ItemFailed):
            s = spec(event.code)
            if self.as_json:
                emit_json({"event": "item_failed", "path": path_text(event.path), "id": s.id_text,
                           "code": s.code, "reason": event.reason})
            else:
                self.end_line()
                click.echo(_("warning: {path}: [{id} {code}] {reason}").format(
                    path=path_text(event.path), id=s.id_text, code=s.code, reason=event.reason), err=True)
        elif isinstance(event, Notice):
            if self.as_json:
                emit_json({"event": "notice", "code": event.code, "text": event.text})
            else:
                self.end_line()
                click.echo(_("note: {text}").format(text=event.text), err=True)

    def end_line(self) -> None:
        if self._line:
            sys.stderr.write("\n")
            self._line = False


def _format(text: str, params: dict[str, Any]) -> str:
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError):
        return text


def error_text(err: SafeholdError) -> str:
    """The error's message in the language in use, with this occurrence's facts."""
    text = _format(_(err.spec.message), err.params)
    return f"{text} ({err.detail})" if err.detail else text


def render_error(err: SafeholdError, as_json: bool) -> None:
    if as_json:  # machine output stays in English; ids and codes are what scripts match on
        emit_json({"event": "error", "error": err.to_dict()})
        return
    click.echo(_("error {id} ({code}): {message}").format(id=err.spec.id_text, code=err.spec.code,
                                                        message=error_text(err)), err=True)
    if err.actions:
        click.echo(_("Recommended actions:"), err=True)
        for action in err.actions:
            click.echo(f"  - {_format(_(action), err.params)}", err=True)
    click.echo(_("Details: safehold errors {id}").format(id=err.spec.id_text), err=True)
