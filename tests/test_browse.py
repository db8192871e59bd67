"""`safehold ls` and `safehold find`: browsing recovery points without restoring them."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Cli


def _tree(root: Path) -> None:
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "plan.txt").write_text("version one\n")
    (root / "docs" / "deep" / "notes.txt").write_text("deep\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o750)
    os.symlink("docs/plan.txt", root / "link")
    os.utime(root / "docs" / "plan.txt", ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))


def test_ls_lists_a_recovery_point_like_ls_l(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    registered.ok("backup", src)
    out = registered.ok("ls", "latest", src).out.splitlines()
    names = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in out}
    assert set(names) == {"docs", "link", "run.sh"}
    assert names["run.sh"].startswith("-rwxr-x---") and " 10 " in names["run.sh"]
    assert names["docs"].startswith("drwx")
    assert names["link"].startswith("lrwxrwxrwx") and names["link"].endswith("-> docs/plan.txt")
    one = registered.ok("ls", "latest", src / "docs" / "plan.txt").out
    assert "plan.txt" in one and " 12 " in one and "2023-11-14" in one
    entries = registered.ok("ls", "latest", src / "docs", "--json").json_lines()
    assert {e["path"] for e in entries} == {"deep", "plan.txt"}
    missing = registered("ls", "latest", src / "nothing-here")
    assert missing.code == 2 and "is not in this recovery point" in missing.err


def test_find_shows_each_version_with_its_recovery_points(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _tree(src)
    registered.ok("backup", src)
    registered.ok("backup", src)  # unchanged: the same version in two points
    (src / "docs" / "plan.txt").write_text("version two, longer\n")
    registered.ok("backup", src)
    rps = [line.split()[0] for line in registered.ok("recovery-points").out.splitlines()[1:]]
    assert len(rps) == 3

    matches = registered.ok("find", "plan.txt", "--json").json_lines()
    [match] = [m for m in matches if m["event"] == "match"]
    assert match["path"] == str(src / "docs" / "plan.txt")
    first, second = match["versions"]
    assert first["size"] == 12 and [r[:8] for r in first["recovery_points"]] == rps[:2]
    assert second["size"] == 20 and [r[:8] for r in second["recovery_points"]] == rps[2:]

    text = registered.ok("find", "*.txt").out
    assert str(src / "docs" / "deep" / "notes.txt") in text and "in 3 recovery point(s)" in text
    whole = registered.ok("find", f"{src}/docs/*", "--json").json_lines()
    assert {m["path"] for m in whole if m["event"] == "match"} == \
        {str(src / "docs" / "plan.txt"), str(src / "docs" / "deep"), str(src / "docs" / "deep" / "notes.txt")}
    later = registered.ok("find", "plan.txt", "--since", "2999-01-01").out
    assert "Nothing matches plan.txt in 0 recovery point(s)." in later
    assert registered("find", "x", "--since", "yesterday").code == 2
