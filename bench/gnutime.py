"""Run a command under GNU time (`/usr/bin/time -v`) and read its report: wall, user, system, peak RSS.

Not a profiler: peak RSS is the largest single process of the tree (what wait4 reports), not a sum.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class Usage:
    wall: float  # seconds
    user: float
    system: float
    max_rss_kib: int
    exit_status: int

    @property
    def cpu(self) -> float:
        return self.user + self.system


_FIELDS = {
    "user": re.compile(r"^\s*User time \(seconds\): ([\d.]+)$", re.M),
    "system": re.compile(r"^\s*System time \(seconds\): ([\d.]+)$", re.M),
    "wall": re.compile(r"^\s*Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)$", re.M),
    "rss": re.compile(r"^\s*Maximum resident set size \(kbytes\): (\d+)$", re.M),
    "exit": re.compile(r"^\s*Exit status: (\d+)$", re.M),
}


def _clock(text: str) -> float:
    """h:mm:ss.ss or m:ss.ss to seconds."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse(report: str) -> Usage:
    """Read the output of `/usr/bin/time -v`; raises ValueError when a field is missing."""
    found = {}
    for name, rx in _FIELDS.items():
        m = rx.search(report)
        if m is None:
            raise ValueError(f"no {name!r} field in GNU time output")
        found[name] = m.group(1)
    return Usage(wall=_clock(found["wall"]), user=float(found["user"]), system=float(found["system"]),
                 max_rss_kib=int(found["rss"]), exit_status=int(found["exit"]))


class CommandFailed(RuntimeError):
    pass


def run(args: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Usage:
    """Run args under GNU time; the tool's own output is discarded unless it fails."""
    fd, report = tempfile.mkstemp(prefix="gnutime-", suffix=".txt")
    os.close(fd)
    try:
        proc = subprocess.run([GNU_TIME, "-v", "-o", report, *args], env=env, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        usage = parse(Path(report).read_text())
    finally:
        os.unlink(report)
    if usage.exit_status != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise CommandFailed(f"{args[0]} exited with {usage.exit_status}: {tail}")
    return usage
