"""Benchmark: safehold against restic and borg on the same generated data, same machine, same run.

    bash bench/setup.sh            # restic, borgbackup and GNU time from Debian's packages (when missing)
    .venv/bin/python bench/compare.py [--tree mixed|many|all] [--runs 5] [--quick] [--work DIR] [--report FILE]

For each tree, run and tool (fresh repository each time, tools in a rotating order): first backup, unchanged
re-run, re-run after a deterministic 1 % change, full restore of the latest backup; and `cp -a` of the same
changed tree as the restore baseline. Wall time, user and system CPU and peak RSS come from `/usr/bin/time -v`.
Before every measured step the source tree is read once (page cache warmed alike for every tool) and after it
`sync` runs (untimed), so that one tool's write-back does not land in another's measurement. Caches are never
dropped (that needs privileges). Prints medians and ratios, and writes docs/benchmarks.md (not with --quick).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import datagen
import gnutime
import report
import tools

PEERS = ["restic", "borg"]


def warm(root: Path) -> None:
    """Read every file once, so each tool starts with the tree in the page cache."""
    for path in datagen.files(root):
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def sample(u: gnutime.Usage) -> dict[str, float]:
    return {"wall": u.wall, "user": u.user, "system": u.system, "cpu": u.cpu, "rss_mib": u.max_rss_kib / 1024}


def measure(step: Any, source: Path) -> gnutime.Usage:
    warm(source)
    usage: gnutime.Usage = step()
    subprocess.run(["sync"], check=True)
    return usage


def one_tool(tool_cls: type[tools.Tool], source: Path, work: Path, seed: int, tree: dict[str, Any]) -> None:
    run = Path(tempfile.mkdtemp(prefix=f"{tool_cls.name}-", dir=work))
    tool = tool_cls(run)
    res = tree["results"].setdefault(tool.name, {})
    try:
        tool.prepare()
        res.setdefault("first", []).append(sample(measure(lambda: tool.backup(source), source)))
        tree["stored_first"].setdefault(tool.name, []).append(tool.stored_bytes())
        res.setdefault("unchanged", []).append(sample(measure(lambda: tool.backup(source), source)))
        change = datagen.mutate(source, work / "stash", seed)
        try:
            res.setdefault("changed", []).append(sample(measure(lambda: tool.backup(source), source)))
            tree["stored_final"].setdefault(tool.name, []).append(tool.stored_bytes())
            target = run / "restore"
            res.setdefault("restore", []).append(sample(measure(lambda: tool.restore(target), source)))
            if tool.name == "safehold" and tree["runs_done"] == 0:
                check_restore(source, target)
        finally:
            change.revert()
    finally:
        keep_until_tree_done(run, work)


def check_restore(source: Path, target: Path) -> None:
    """Once per tree: the restored tree has the same files and sizes as the source (a benchmark of a broken
    restore would be worthless)."""
    restored = target / source.relative_to("/")
    want = {p.relative_to(source): p.stat().st_size for p in datagen.files(source)}
    got = {p.relative_to(restored): p.stat().st_size for p in datagen.files(restored)}
    if want != got:
        raise SystemExit(f"safehold's restore differs from the source ({len(set(want.items()) ^ set(got.items()))} "
                         "entries)")


def baseline(source: Path, work: Path, seed: int, tree: dict[str, Any]) -> None:
    change = datagen.mutate(source, work / "stash", seed)
    target = Path(tempfile.mkdtemp(prefix="cp-", dir=work))
    try:
        tree.setdefault("cp", []).append(sample(measure(lambda: tools.copy_tree(source, target), source)))
    finally:
        change.revert()
        keep_until_tree_done(target, work)


def keep_until_tree_done(path: Path, work: Path) -> None:
    """Move a finished run's folder aside instead of deleting it; `drop_finished` deletes them all once the
    tree's runs are over. On ext4 without a journal every file created within 30 s of a large deletion costs
    a scan past the freed inodes (`recently_deleted` in the inode allocator), so deleting one tool's restored
    tree right before the next tool's restore would charge that tool for it, and most the fastest one."""
    finished = work / "finished"
    finished.mkdir(exist_ok=True)
    path.rename(finished / path.name)


def drop_finished(work: Path) -> None:
    shutil.rmtree(work / "finished", ignore_errors=True)


def generate(name: str, root: Path, seed: int, quick: bool) -> str:
    started = time.perf_counter()
    if name == "mixed":
        datagen.make_mixed(root, seed, scale=1 / 32 if quick else 1.0)
    else:
        datagen.make_many(root, seed, count=5000 if quick else 200_000)
    paths = list(datagen.files(root))
    size = sum(p.stat().st_size for p in paths)
    print(f"generated {name}: {len(paths)} files, {size / 2**20:.0f} MiB in {time.perf_counter() - started:.0f} s",
          flush=True)
    return f"{len(paths):,} files, {size / 2**20:,.0f} MiB"


def write_doc(path: Path, trees: dict[str, dict[str, Any]], seed: int) -> None:
    old = path.read_text() if path.exists() else ""
    m = report.machine()
    versions = {"safehold": tools.Safehold.version(), "restic": tools.Restic.version(),
                "borg": tools.Borg.version(), "cp": tools.cp_version()}
    lines = [
        "# Benchmarks: safehold, restic and borg",
        "",
        "Written by `bench/compare.py` (see [How to run it](#how-to-run-it)); every figure below is a median over "
        "runs in which all tools backed up the same generated data on the same machine, one after the other.",
        "",
        f"- Report written: {datetime.date.today().isoformat()}",
        f"- Machine: {m['cpu']}, {m['memory']} RAM, {m['system']}, kernel {m['kernel']}, Python {m['python']}",
        f"- Versions: safehold {versions['safehold']}; restic {versions['restic']} (Debian package, its defaults: "
        f"repository format 2, compression auto); borg {versions['borg']} (Debian package, repokey-blake2, "
        f"`--compression zstd`, i.e. zstd level 3); {versions['cp']}",
        f"- Data: `bench/datagen.py`, seed {seed}. Encryption is on for every tool.",
        "",
        "Ratios are safehold / peer (below 1 means safehold is faster or smaller). Targets from DESIGN.md §6: first "
        "backup ≤ 0.5×, unchanged re-run ≤ 0.3×, after a 1 % change ≤ 0.5×, peak memory ≤ 1×, stored size ≤ 1× "
        "against restic and the same or better against borg; restore: wall time within 1.2× of `cp -a` of the same "
        "tree and user-space CPU ≤ 0.5× restic's.",
    ]
    for name, tree in trees.items():
        lines += ["", f"## The {name} tree: {tree['description']}", "",
                  f"Medians of {len(tree['results']['safehold']['first'])} runs, {tree.get('date', '')}.", "",
                  *report.tree_table(tree, PEERS), "",
                  f"`cp -a` of the same tree: {statistics.median(x['wall'] for x in tree['cp']):.2f} s wall "
                  f"(median), {statistics.median(x['user'] for x in tree['cp']):.2f} s user CPU.", "",
                  "Targets:", "", *report.verdicts(tree, PEERS)]
    lines += ["", "## How to run it", "", "```sh",
              "bash scripts/setup.sh test          # .venv with safehold",
              "bash bench/setup.sh                 # restic, borgbackup, GNU time from Debian (only if missing)",
              ".venv/bin/python bench/compare.py --runs 5 --tree all     # writes this file",
              ".venv/bin/python bench/compare.py --quick                 # small smoke run, prints only",
              ".venv/bin/python bench/million.py                         # 1,000,000 tiny files, peak memory",
              "```", "",
              "Method: for each run and tool a fresh repository (vault), cache and key; the tools take turns in a "
              "rotating order. Each measured step is run under `/usr/bin/time -v` (wall, user and system CPU, "
              "peak RSS of the largest process). Before each step the source tree is read once, so the page "
              "cache is equally warm for every tool; after each step `sync` runs untimed, so write-back of one "
              "step does not slow the next. Caches are never dropped. Finished run folders (repositories and restored "
              "trees) are moved aside and deleted only after a tree's last run, so that no timed step follows a "
              "large deletion (on ext4 without a journal, creating files soon after one costs extra kernel time). "
              "The 1 % change (`datagen.mutate`) edits, "
              "adds and removes files, including scattered edits and a shifting insertion inside large files, "
              "and is reverted after each tool. Stored size is the apparent size of all files in the repository "
              "or vault folder (local caches not counted). The raw samples are in `docs/benchmarks.json`.", ""]
    kept = report.keep_sections(old)
    if kept:
        lines += [kept, ""]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--tree", choices=["mixed", "many", "all"], default="all")
    ap.add_argument("--runs", type=int, default=None, help="repetitions (default 5; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="small trees (1/32 of the mixed tree, 5,000 files)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--tools", default="safehold,restic,borg", help="comma-separated subset")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new one in /tmp)")
    ap.add_argument("--report", type=Path, default=None,
                    help="Markdown to write (default docs/benchmarks.md; none with --quick)")
    ap.add_argument("--keep", action="store_true", help="keep the generated trees in the work folder")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="only write the report from saved results (docs/benchmarks.json or a work folder's)")
    a = ap.parse_args()
    runs = a.runs or (1 if a.quick else 5)
    out = a.report or (None if a.quick else tools.REPO / "docs" / "benchmarks.md")
    if a.from_json:
        assert out is not None
        write_doc(out, json.loads(a.from_json.read_text()), a.seed)
        return
    if not Path(gnutime.GNU_TIME).exists() or not all(shutil.which(t) for t in ("restic", "borg")):
        subprocess.run(["bash", str(Path(__file__).with_name("setup.sh"))], check=True)
    if not tools.SAFEHOLD.exists():
        raise SystemExit(f"no {tools.SAFEHOLD}: run `bash scripts/setup.sh` first")
    names = ["mixed", "many"] if a.tree == "all" else [a.tree]
    chosen = a.tools.split(",")
    if "safehold" not in chosen:
        raise SystemExit("--tools must include safehold")
    peers = [p for p in PEERS if p in chosen]
    work = Path(tempfile.mkdtemp(prefix="safehold-bench-", dir=a.work))
    if tools.REPO in work.resolve().parents:
        raise SystemExit("the work folder must be outside the repository")
    print(f"work folder {work}", flush=True)
    trees: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            source = work / "trees" / name
            tree: dict[str, Any] = {"description": generate(name, source, a.seed, a.quick), "runs": runs,
                                    "runs_done": 0, "date": datetime.date.today().isoformat(), "results": {},
                                    "stored_first": {}, "stored_final": {}}
            trees[name] = tree
            for i in range(runs):
                baseline(source, work, a.seed, tree)
                order = chosen[i % len(chosen):] + chosen[:i % len(chosen)]
                for tool_name in order:
                    started = time.perf_counter()
                    one_tool(tools.TOOLS[tool_name], source, work, a.seed, tree)
                    # Partial results survive an interrupted run: --from-json turns them into the report.
                    (work / "results.json").write_text(json.dumps(trees, indent=1) + "\n")
                    print(f"{name} run {i + 1}/{runs} {tool_name}: "
                          + ", ".join(f"{ph} {tree['results'][tool_name][ph][-1]['wall']:.2f} s"
                                      for ph in report.PHASES)
                          + f" ({time.perf_counter() - started:.0f} s with warming)", flush=True)
                tree["runs_done"] += 1
            drop_finished(work)
            print(report.console(name, tree, peers), flush=True)
            if not a.keep:
                shutil.rmtree(source)
    finally:
        if not a.keep and all(t["runs_done"] == t["runs"] for t in trees.values()):
            shutil.rmtree(work, ignore_errors=True)
    if out is not None:
        saved = out.with_suffix(".json")
        # Trees not measured this time keep their earlier results.
        merged = {**(json.loads(saved.read_text()) if saved.exists() else {}), **trees}
        saved.write_text(json.dumps(merged, indent=1) + "\n")
        write_doc(out, merged, a.seed)
        print(f"wrote {out} and {saved}")


if __name__ == "__main__":
    main()
