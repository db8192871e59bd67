"""Benchmark: reading a large file from a mounted recovery point against restoring it, same data, same run.

    python bench/mount_read.py [--size-mb 512] [--runs 3] [--work DIR]

One file of --size-mb (random data with a compressible stretch every 10 MiB) is backed up once into a fresh
embedded vault. Then, per run: `safehold restore latest FILE --target T` (wall time of the command), and on a
fresh mount each time `cat FILE > /dev/null` and `cp FILE DEST` (wall time of the tool alone; the mount's start
is timed apart). The vault's packs are in the page cache for both, as after a backup. Restore is also timed
without its fixed cost (interpreter start, key unwrapping, catalog lookups): the engine's own elapsed time from
its last `--json` progress event, which is its streaming rate. Prints medians, MB/s (10^6 bytes) and the ratios
mount/restore.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAFEHOLD = [sys.executable, "-m", "safehold.cli.main"]
MB = 10**6


def generate(path: Path, size_mb: int, seed: int = 2026) -> int:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    text = b"".join(b"line %d of a log that compresses well\n" % i for i in range(60_000))[:2 * 1024 * 1024]
    left = size_mb * 1024 * 1024
    with path.open("wb") as f:
        while left > 0:
            piece = rng.randbytes(8 * 1024 * 1024) + text
            f.write(piece[:left])
            left -= len(piece[:left])
    return path.stat().st_size


def run(args: list[str | os.PathLike[str]], env: dict[str, str], stdout: int | None = subprocess.DEVNULL) -> float:
    start = time.perf_counter()
    p = subprocess.run([str(a) for a in args], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({p.returncode}): {p.stderr}")
    return took


def restore(args: list[str | os.PathLike[str]], env: dict[str, str]) -> tuple[float, float]:
    """(wall time of the command, the restore engine's own elapsed time from its last progress event)."""
    start = time.perf_counter()
    p = subprocess.run([*map(str, args), "--json"], env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"restore failed ({p.returncode}): {p.stderr}")
    events = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    engine = [e["elapsed_s"] for e in events if e.get("event") == "progress"][-1]
    return took, float(engine)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path)
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="safehold-mount-bench-", dir=opts.work))
    env = {**os.environ, "SAFEHOLD_HOME": str(work / "agent"), "LC_ALL": "C.UTF-8"}
    mnt = work / "mnt"
    try:
        src = work / "src"
        src.mkdir()
        size = generate(src / "big.bin", opts.size_mb)
        run([*SAFEHOLD, "vault", "init", work / "vault", "--credentials-out", work / "v.vaultcredentials"], env)
        run([*SAFEHOLD, "register", "--credentials", work / "v.vaultcredentials", "--generate-passphrase",
             work / "passphrase"], env)
        run([*SAFEHOLD, "backup", src], env)
        mnt.mkdir()
        inside = mnt / str(src).lstrip("/") / "big.bin"
        rows: dict[str, list[float]] = {k: [] for k in ("restore", "restore_engine", "mount_start", "cat", "cp")}
        for i in range(opts.runs):
            target = work / f"restore-{i}"
            wall, engine = restore([*SAFEHOLD, "restore", "latest", src / "big.bin", "--target", target], env)
            rows["restore"].append(wall)
            rows["restore_engine"].append(engine)
            shutil.rmtree(target)
            for tool in ("cat", "cp"):
                rows["mount_start"].append(run([*SAFEHOLD, "mount", "latest", mnt], env))
                try:
                    if tool == "cat":
                        with open(os.devnull, "wb") as null:
                            rows["cat"].append(run(["cat", inside], env, stdout=null.fileno()))
                    else:
                        rows["cp"].append(run(["cp", inside, work / "copy.bin"], env))
                        os.unlink(work / "copy.bin")
                finally:
                    run([*SAFEHOLD, "unmount", mnt], env)
        med = {k: statistics.median(v) for k, v in rows.items()}
        net = med["restore_engine"]
        rate = {"restore": size / MB / med["restore"], "restore_net": size / MB / net,
                "cat": size / MB / med["cat"], "cp": size / MB / med["cp"]}
        print(f"file: {size / MB:.0f} MB ({size / 2**20:.0f} MiB), {opts.runs} runs, medians")
        print(f"restore (whole command)     {med['restore']:7.2f} s  {rate['restore']:7.1f} MB/s")
        print(f"restore engine alone        {net:7.2f} s  {rate['restore_net']:7.1f} MB/s")
        print(f"mount until ready           {med['mount_start']:7.2f} s")
        print(f"cat from the mount          {med['cat']:7.2f} s  {rate['cat']:7.1f} MB/s")
        print(f"cp from the mount           {med['cp']:7.2f} s  {rate['cp']:7.1f} MB/s")
        print(f"ratio cp/restore  (throughput): {rate['cp'] / rate['restore']:.2f} whole command, "
              f"{rate['cp'] / rate['restore_net']:.2f} engine alone")
        print(f"ratio cat/restore (throughput): {rate['cat'] / rate['restore']:.2f} whole command, "
              f"{rate['cat'] / rate['restore_net']:.2f} engine alone")
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
