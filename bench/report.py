"""Medians, ratios against the targets of DESIGN.md §6, the machine, and the Markdown of docs/benchmarks.md.

Pure formatting of measured samples; measuring is in compare.py. Marked sections (million.py) survive a rewrite.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
from pathlib import Path
from typing import Any

PHASES = ("first", "unchanged", "changed", "restore")
PHASE_NAMES = {"first": "first backup", "unchanged": "unchanged re-run", "changed": "after 1 % change",
               "restore": "full restore"}
# safehold / peer, at most (DESIGN.md §6); restore is judged against cp -a (wall) and restic (user CPU).
TARGETS = {"first": 0.5, "unchanged": 0.3, "changed": 0.5, "rss": 1.0, "stored": 1.0}
RESTORE_WALL_VS_CP = 1.2
RESTORE_USER_VS_RESTIC = 0.5

Samples = dict[str, list[dict[str, float]]]  # phase -> one dict per run


def median(samples: Samples, phase: str, key: str) -> float:
    return statistics.median(s[key] for s in samples[phase])


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    debian = Path("/etc/debian_version")
    return {"cpu": f"{cpu}, {os.cpu_count()} cores", "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
            "kernel": platform.release(), "system": f"Debian {debian.read_text().strip()}" if debian.exists()
            else platform.platform(), "python": platform.python_version()}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else "–"


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def tree_table(tree: dict[str, Any], peers: list[str]) -> list[str]:
    """One tree's medians per tool and phase, and safehold's ratio to each peer with its target."""
    res: dict[str, Samples] = tree["results"]
    tools = [t for t in ("safehold", *peers) if t in res]
    lines = [f"| phase | measure | {' | '.join(tools)} | "
             + " | ".join(f"safehold / {p}" for p in peers if p in res) + " | target |",
             "|---" * (len(tools) + 3 + len([p for p in peers if p in res])) + "|"]
    for phase in PHASES:
        for key, unit, fmt in (("wall", "s", "{:.2f}"), ("cpu", "s", "{:.2f}"), ("user", "s", "{:.2f}"),
                               ("rss_mib", "MiB", "{:.0f}")):
            if key == "user" and phase != "restore":
                continue
            cells = [fmt.format(median(res[t], phase, key)) for t in tools]
            ratios = [_ratio(median(res["safehold"], phase, key), median(res[p], phase, key))
                      for p in peers if p in res]
            target = ""
            if phase != "restore" and key == "wall":
                target = f"≤ {TARGETS[phase]}×"
            elif key == "rss_mib":
                target = "≤ 1×"
            elif phase == "restore" and key == "user":
                target = f"≤ {RESTORE_USER_VS_RESTIC}× restic"
            name = {"wall": "wall", "cpu": "user+sys CPU", "user": "user CPU", "rss_mib": "peak RSS"}[key]
            lines.append(f"| {PHASE_NAMES[phase]} | {name} ({unit}) | {' | '.join(cells)} | {' | '.join(ratios)} "
                         f"| {target} |")
    for key, label in (("stored_first", "after first backup"), ("stored_final", "after all three backups")):
        cells = [f"{statistics.median(tree[key][t]) / 2**20:.0f}" for t in tools]
        ratios = [_ratio(statistics.median(tree[key]["safehold"]), statistics.median(tree[key][p]))
                  for p in peers if p in res]
        lines.append(f"| stored size | {label} (MiB) | {' | '.join(cells)} | {' | '.join(ratios)} | ≤ 1× |")
    return lines


def verdicts(tree: dict[str, Any], peers: list[str]) -> list[str]:
    """Each target of DESIGN.md §6 with the measured median ratio."""
    res: dict[str, Samples] = tree["results"]
    out = []
    for peer in peers:
        if peer not in res:
            continue
        for phase in ("first", "unchanged", "changed"):
            r = median(res["safehold"], phase, "wall") / median(res[peer], phase, "wall")
            out.append(f"- {PHASE_NAMES[phase]} vs {peer}: {r:.2f}× (target ≤ {TARGETS[phase]}×) — "
                       f"{_mark(r <= TARGETS[phase])}")
        worst = max(median(res["safehold"], ph, "rss_mib") / median(res[peer], ph, "rss_mib") for ph in PHASES)
        out.append(f"- peak memory vs {peer}, worst phase: {worst:.2f}× (target ≤ 1×) — {_mark(worst <= 1)}")
        s = statistics.median(tree["stored_first"]["safehold"]) / statistics.median(tree["stored_first"][peer])
        out.append(f"- stored size vs {peer} after the first backup: {s:.2f}× (target ≤ 1×) — {_mark(s <= 1)}")
    if "cp" in tree:
        cp = statistics.median(x["wall"] for x in tree["cp"])
        r = median(res["safehold"], "restore", "wall") / cp
        out.append(f"- restore wall vs `cp -a` ({cp:.2f} s): {r:.2f}× (target ≤ {RESTORE_WALL_VS_CP}×) — "
                   f"{_mark(r <= RESTORE_WALL_VS_CP)}")
    if "restic" in res:
        r = median(res["safehold"], "restore", "user") / median(res["restic"], "restore", "user")
        out.append(f"- restore user CPU vs restic: {r:.2f}× (target ≤ {RESTORE_USER_VS_RESTIC}×) — "
                   f"{_mark(r <= RESTORE_USER_VS_RESTIC)}")
    return out


def console(tree_name: str, tree: dict[str, Any], peers: list[str]) -> str:
    return "\n".join([f"== {tree_name}: {tree['description']}, medians of {tree['runs']} runs",
                      *tree_table(tree, peers), *verdicts(tree, peers)])


def keep_sections(old: str) -> str:
    """Sections written by other scripts (between `<!-- NAME:begin -->` and `<!-- NAME:end -->`)."""
    return "\n\n".join(m.group(0) for m in re.finditer(r"<!-- (\w+):begin -->.*?<!-- \1:end -->", old, re.S))


def replace_section(text: str, name: str, body: str) -> str:
    block = f"<!-- {name}:begin -->\n{body.strip()}\n<!-- {name}:end -->"
    rx = re.compile(rf"<!-- {name}:begin -->.*?<!-- {name}:end -->", re.S)
    return rx.sub(lambda _m: block, text) if rx.search(text) else text.rstrip() + "\n\n" + block + "\n"
