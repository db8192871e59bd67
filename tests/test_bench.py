"""The benchmark's own parts: the data generator is deterministic, the mutation changes about 1 % of the files
and reverts exactly, and the GNU time parser reads real `/usr/bin/time -v` output. No timing assertions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import datagen
import gnutime


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in datagen.files(root)}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    datagen.make_mixed(tmp_path / "a", seed=7, scale=1 / 64)
    datagen.make_mixed(tmp_path / "b", seed=7, scale=1 / 64)
    datagen.make_mixed(tmp_path / "c", seed=8, scale=1 / 64)
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert len(a) > 400
    assert a == b
    assert set(a.values()) != set(c.values())
    datagen.make_many(tmp_path / "m1", seed=7, count=300)
    datagen.make_many(tmp_path / "m2", seed=7, count=300)
    assert len(digest(tmp_path / "m1")) == 300
    assert digest(tmp_path / "m1") == digest(tmp_path / "m2")


def test_mixed_tree_has_duplicates_and_incompressible_data(tmp_path: Path) -> None:
    datagen.make_mixed(tmp_path, seed=7, scale=1 / 64)
    d = digest(tmp_path)
    assert len(set(d.values())) < len(d)  # vendored copies and a copied large file
    video = (tmp_path / "big" / "video1.mkv").read_bytes()
    import zstandard

    assert len(zstandard.compress(video, 3)) > len(video) * 0.99
    log = (tmp_path / "big" / "server0.log").read_bytes()
    assert len(zstandard.compress(log, 3)) < len(log) * 0.5


def test_mutation_changes_about_one_percent_deterministically_and_reverts(tmp_path: Path) -> None:
    trees = []
    for name in ("a", "b"):
        root = tmp_path / name
        datagen.make_many(root, seed=3, count=1000)
        (root / "big.img").write_bytes(os.urandom(9 * datagen.MIB))  # a large file: edits inside it
        (root / "big2.img").write_bytes(os.urandom(9 * datagen.MIB))
        before = digest(root)
        stat_before = {p: os.stat(root / p).st_mtime_ns for p in before}
        m = datagen.mutate(root, tmp_path / f"stash-{name}", seed=3)
        after = digest(root)
        changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
        assert 0.005 * len(before) <= len(changed) <= 0.02 * len(before)
        assert {"big.img", "big2.img"} <= changed
        assert m.added and m.removed
        trees.append((sorted(changed), after))
        m.revert()
        assert digest(root) == before
        assert {p: os.stat(root / p).st_mtime_ns for p in before} == stat_before
        assert not (tmp_path / f"stash-{name}").exists()
    # Same seed, same tree: the same files change (the large files got random bytes, so compare names only).
    assert trees[0][0] == trees[1][0]


@pytest.mark.skipif(not Path(gnutime.GNU_TIME).exists(), reason="GNU time missing: bash bench/setup.sh")
def test_gnu_time_report_is_parsed(tmp_path: Path) -> None:
    report = tmp_path / "report.txt"
    subprocess.run([gnutime.GNU_TIME, "-v", "-o", str(report), sys.executable, "-c",
                    "b = bytearray(64 * 1024 * 1024); sum(range(10**6))"], check=True)
    u = gnutime.parse(report.read_text())
    assert u.exit_status == 0
    assert u.max_rss_kib > 64 * 1024
    assert u.wall >= 0 and u.user + u.system > 0
    failed = subprocess.run([gnutime.GNU_TIME, "-v", "-o", str(report), "sh", "-c", "exit 4"])
    assert failed.returncode == 4
    assert gnutime.parse(report.read_text()).exit_status == 4
    with pytest.raises(gnutime.CommandFailed):
        gnutime.run(["sh", "-c", "exit 5"])
    with pytest.raises(ValueError):
        gnutime.parse("Command being timed: \"x\"\n")


def test_clock_formats() -> None:
    assert gnutime._clock("0:01.50") == 1.5
    assert gnutime._clock("1:02:03.25") == 3723.25
