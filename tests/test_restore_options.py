"""Restore choices: what happens to items already at the target (copy beside, overwrite, skip), restoring to
the original place, and a cancelled restore that keeps what it restored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import Cli, restored


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("backed up a\n")
    (src / "sub" / "b.txt").write_text("backed up b\n")
    os.link(src / "a.txt", src / "a-hardlink")
    os.symlink("a.txt", src / "link")
    return src


def test_existing_items_are_copied_beside_by_default_then_skipped_or_overwritten(registered: Cli,
                                                                                  tmp_path: Path) -> None:
    src = _src(tmp_path)
    registered.ok("backup", src)
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)
    out = restored(target, src)
    (out / "a.txt").write_text("changed at the target\n")  # also the hard link's content
    os.unlink(out / "link")
    os.symlink("elsewhere", out / "link")

    r = registered.ok("restore", "latest", "--target", target, "--json")
    summary = r.summary()
    assert summary["copies"] == 4 and summary["skipped"] == 0  # a.txt, a-hardlink, link, sub/b.txt
    assert (out / "a.txt").read_text() == "changed at the target\n"
    assert (out / "a.txt.restored").read_text() == "backed up a\n"
    assert os.readlink(out / "link.restored") == "a.txt"
    assert (out / "sub" / "b.txt.restored").read_text() == "backed up b\n"
    assert os.stat(out / "a.txt.restored").st_ino == os.stat(out / "a-hardlink.restored").st_ino
    again = registered.ok("restore", "latest", "--target", target, "--json").summary()
    assert again["copies"] == 4 and (out / "a.txt.restored-2").exists()

    skipped = registered.ok("restore", "latest", "--target", target, "--existing", "skip", "--json").summary()
    assert skipped["skipped"] == 4 and skipped["files"] == 0
    assert (out / "a.txt").read_text() == "changed at the target\n"

    text = registered.ok("restore", "latest", "--target", target, "--existing", "overwrite").out
    assert "4 overwritten" in text
    assert (out / "a.txt").read_text() == "backed up a\n"
    assert os.stat(out / "a.txt").st_ino == os.stat(out / "a-hardlink").st_ino
    assert os.readlink(out / "link") == "a.txt"
    assert not [p for p in out.iterdir() if p.name.startswith(".safehold-restore-")]


def test_restore_to_the_original_place(registered: Cli, tmp_path: Path) -> None:
    src = _src(tmp_path)
    registered.ok("backup", src)
    (src / "a.txt").write_text("damaged later\n")
    (src / "sub" / "b.txt").unlink()
    registered.ok("restore", "latest", str(src), "--target", "/", "--existing", "overwrite")
    assert (src / "a.txt").read_text() == "backed up a\n"
    assert (src / "sub" / "b.txt").read_text() == "backed up b\n"


def test_a_cancelled_restore_keeps_what_it_restored_and_says_so(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    count = 400  # 400 MiB: restore takes well over the 0.25 s between progress events, so the signal comes mid-way
    for i in range(count):
        (src / f"f{i:03}.bin").write_bytes(os.urandom(1024 * 1024))
    registered.ok("backup", src)
    target = tmp_path / "restore"
    env = {**os.environ, "SAFEHOLD_HOME": str(registered.home), "LC_ALL": "C.UTF-8"}
    proc = subprocess.Popen([sys.executable, "-m", "safehold.cli.main", "restore", "latest", "--target",
                             str(target), "--json"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == "progress" and events[-1]["items"] >= 1:
            proc.send_signal(signal.SIGINT)
            break
    events += [json.loads(line) for line in proc.stdout]
    proc.stdout.close()
    assert proc.wait(timeout=120) == 130
    summary = events[-1]
    assert summary["event"] == "summary" and summary["status"] == "Cancelled"
    out = restored(target, src)
    kept = sorted(p.name for p in out.iterdir())
    # a file whose data was written but whose metadata was being set when the signal came is kept, uncounted
    assert 0 < summary["files"] <= len(kept) <= summary["files"] + 1 < count + 1
    for name in kept:  # every file left is whole: one whose data was being written was removed
        assert (out / name).read_bytes() == (src / name).read_bytes()
