"""Failed-file lists: one text file per job in the cache folder's log folder.

Each line: path, code id, code name, reason, recommended action, separated by tabs. Paths that are not
UTF-8 are written with backslash escapes.
"""

from __future__ import annotations

from pathlib import Path

from safehold import errors
from safehold.agent.events import ItemFailed


def failed_files_path(logs: Path, job_id: str) -> Path:
    return logs / f"FailedFiles-{job_id}.txt"


def write_failed_files(logs: Path, job_id: str, items: list[ItemFailed]) -> Path:
    logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = failed_files_path(logs, job_id)
    lines = []
    for item in items:
        spec = errors.spec(item.code)
        action = spec.actions[0] if spec.actions else ""
        fields = [item.path.decode("utf-8", "backslashreplace"), spec.id_text, spec.code, item.reason, action]
        lines.append("\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields))
    path.write_text("".join(line + "\n" for line in lines))
    return path
