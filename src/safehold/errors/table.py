"""The error catalog as a Markdown document (docs/errors.md), generated, never written by hand.

`python scripts/errors_doc.py` rewrites the file; a test fails when it differs from the catalog.
"""

from __future__ import annotations

from safehold.errors import catalog, own
from safehold.errors.spec import ErrorSpec

HEADER = """# safehold error catalog

Generated from `src/safehold/errors/` by `python scripts/errors_doc.py`; do not edit by hand.
`safehold errors` lists the same entries and `safehold errors ID` explains one, in the language of the
environment (`LC_ALL`, `LC_MESSAGES`, `LANG`) or of `--lang`.

Ids from the MARS troubleshooting article keep the article's numbers; safehold's own ids are 700000–799999.
Per-file codes appear in a job's failed-file list (`CACHE/logs/FailedFiles-<job>.txt`), not as the job's error.
"""


def _entry(e: ErrorSpec) -> list[str]:
    lines = [f"### {e.id_text} {e.code}", "", e.message, "",
             f"Exit code {e.exit_code}; HTTP status {e.http_status}" + ("; retried by agents" if e.retryable else "")
             + ".", ""]
    if e.causes:
        lines += ["Causes:", "", *[f"- {c}" for c in e.causes], ""]
    if e.actions:
        lines += ["Recommended actions:", "", *[f"- {a}" for a in e.actions], ""]
    for name, actions in e.variants:
        lines += [f"Recommended actions ({name}):", "", *[f"- {a}" for a in actions], ""]
    return lines


def markdown() -> str:
    sections = [
        ("Errors from the MARS troubleshooting article", [e for e in catalog.ENTRIES if e.kind != "file"]),
        ("Per-file codes", [e for e in (*catalog.ENTRIES, *own.ENTRIES) if e.kind == "file"]),
        ("safehold's own errors", [e for e in own.ENTRIES if e.kind != "file"]),
    ]
    lines = [HEADER]
    for title, entries in sections:
        lines += [f"## {title}", "", "| id | code | message |", "|---|---|---|"]
        lines += [f"| {e.id_text} | {e.code} | {e.message.replace('|', '/')} |" for e in entries]
        lines.append("")
        for e in entries:
            lines += _entry(e)
    return "\n".join(lines).rstrip("\n") + "\n"
