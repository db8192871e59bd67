"""Benchmark: a first backup of 1,000,000 empty or tiny files, to show that peak memory stays bounded.

    .venv/bin/python bench/million.py [--count 1000000] [--tools safehold,restic] [--work DIR] [--report FILE]
                                      [--max-rss MIB]

Files in folders of 1,000; every other file empty, the rest a few bytes. Wall time, CPU and peak RSS from
`/usr/bin/time -v`; the figures go into a marked section of docs/benchmarks.md (with --report, or by default).
safehold's peak RSS is held to a stated bound (`MAX_RSS_MIB`, scaled by --count): above it the script says
so and exits with status 1.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import tempfile
import time
from pathlib import Path

import compare
import report
import tools

# The bound this benchmark keeps for safehold's peak RSS at 1,000,000 files, in MiB. What grows with the tree
# is the set of chunk ids (about 130 bytes each for the known and referenced sets together); the rest (the
# folders being walked, packs in flight, read buffers, the interpreter) does not grow with the file count.
MAX_RSS_MIB = 320
BASE_RSS_MIB = 100  # the fixed part: the bound for `--count N` is BASE + (MAX - BASE) * N / 1,000,000


def bound_mib(count: int) -> float:
    return BASE_RSS_MIB + (MAX_RSS_MIB - BASE_RSS_MIB) * count / 1_000_000


def make(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    for d in range(0, count, 1000):
        sub = root / f"d{d // 1000:04}"
        sub.mkdir()
        dfd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(d, min(d + 1000, count)):
                fd = os.open(f"f{i:07}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dfd)
                if i % 2:
                    os.write(fd, f"{i}\n".encode())
                os.close(fd)
        finally:
            os.close(dfd)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--tools", default="safehold", help="comma-separated: safehold, restic, borg")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new one in /tmp)")
    ap.add_argument("--report", type=Path, default=tools.REPO / "docs" / "benchmarks.md",
                    help="Markdown file whose `million` section is replaced (default docs/benchmarks.md)")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--max-rss", type=float, default=None,
                    help=f"safehold's peak RSS bound in MiB (default {MAX_RSS_MIB} at 1,000,000 files, scaled)")
    a = ap.parse_args()
    limit = a.max_rss if a.max_rss is not None else bound_mib(a.count)
    safehold_rss = 0.0
    if a.work is not None:
        Path(a.work).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="safehold-million-", dir=a.work))
    if tools.REPO in work.resolve().parents:
        raise SystemExit("the work folder must be outside the repository")
    rows = []
    try:
        source = work / "files"
        started = time.perf_counter()
        make(source, a.count)
        print(f"made {a.count} files in {time.perf_counter() - started:.0f} s", flush=True)
        for name in a.tools.split(","):
            run = work / name
            run.mkdir()
            tool = tools.TOOLS[name](run)
            tool.prepare()
            u = compare.measure(lambda t=tool: t.backup(source), source)
            stored = tool.stored_bytes()
            rss = u.max_rss_kib / 1024
            if name == "safehold":
                safehold_rss = rss
            rows.append(f"| {name} | {u.wall:.1f} | {u.cpu:.1f} | {rss:.0f} | {stored / 2**20:.0f} |")
            print(rows[-1], flush=True)
            shutil.rmtree(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    checked = "safehold" in a.tools.split(",")
    kept = not checked or safehold_rss <= limit
    verdict = f"safehold's peak RSS {safehold_rss:.0f} MiB, bound {limit:.0f} MiB: " \
        + ("kept" if kept else "**exceeded**") if checked else ""
    if verdict:
        print(verdict, flush=True)
    if a.no_report:
        raise SystemExit(0 if kept else 1)
    m = report.machine()
    body = "\n".join([
        f"## One million files (`bench/million.py`, {datetime.date.today().isoformat()})", "",
        f"A first backup of {a.count:,} files (every other one empty, the rest a few bytes, 1,000 a folder), "
        f"one run, on {m['cpu']}, {m['memory']} RAM. Peak RSS is the largest process, from `/usr/bin/time -v`.",
        "", "| tool | wall (s) | user+sys CPU (s) | peak RSS (MiB) | stored (MiB) |", "|---|---|---|---|---|",
        *rows, "", verdict + "." if verdict else ""])
    old = a.report.read_text() if a.report.exists() else ""
    a.report.write_text(report.replace_section(old, "million", body))
    if not kept:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
