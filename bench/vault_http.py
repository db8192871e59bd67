"""Benchmark: the vault over HTTPS on loopback against the embedded vault, same data, same run.

    python bench/vault_http.py [--size-mb 600] [--runs 3] [--work DIR]

For each run and each vault kind (fresh vault each time): first backup, unchanged re-run, full restore.
Wall time, CPU (user+sys of safehold and, for the served vault, of the server process) and peak RSS of the
agent come from wait4(). The page cache is warmed by reading the data once before the runs. Prints medians
and the ratio served/embedded; the target (DESIGN.md §6) is that the served vault keeps at least 80 % of the
embedded speed, i.e. time ratio <= 1.25.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SAFEHOLD = [sys.executable, "-m", "safehold.cli.main"]


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float


def generate(root: Path, size_mb: int, seed: int = 2026) -> None:
    """Deterministic mixed tree: a few large files, medium ones, many small text files, some duplicates."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    root.mkdir(parents=True)
    budget = size_mb * 1024 * 1024
    large = budget * 6 // 10
    for i in range(4):
        (root / f"large{i}.bin").write_bytes(rng.randbytes(large // 4))
    med = root / "medium"
    med.mkdir()
    for i in range(60):
        (med / f"m{i:03}.dat").write_bytes(rng.randbytes(budget * 3 // 10 // 60))
    words = [rng.randbytes(6).hex() for _ in range(2000)]
    small_budget = budget // 10
    n = 0
    while small_budget > 0:
        d = root / "src" / f"pkg{n // 200:03}"
        d.mkdir(parents=True, exist_ok=True)
        text = ("\n".join(" ".join(rng.choices(words, k=12)) for _ in range(rng.randint(5, 80))) + "\n").encode()
        (d / f"mod{n:05}.py").write_bytes(text)
        small_budget -= len(text)
        n += 1
    shutil.copyfile(root / "large0.bin", root / "large0.copy")  # a duplicate


def warm(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with open(os.path.join(dirpath, f), "rb") as fh:
                while fh.read(1 << 20):
                    pass


def timed(args: list[str], env: dict[str, str]) -> Sample:
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{err}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


class Server:
    def __init__(self, vault: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([*SAFEHOLD, "vault", "serve", str(vault), "--listen", "127.0.0.1:0", "--json"],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=60):
            raise SystemExit("vault server did not start")
        self.url = json.loads(self.proc.stdout.readline())["url"]

    def cpu(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def one_run(kind: str, data: Path, work: Path) -> dict[str, Sample]:
    run = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=work))
    env = {**os.environ, "SAFEHOLD_HOME": str(run / "agent")}
    vault = run / "vault"
    creds = run / "c.vaultcredentials"
    subprocess.run([*SAFEHOLD, "vault", "init", str(vault), "--credentials-out", str(creds)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    server = None
    if kind == "served":
        server = Server(vault, env)
        subprocess.run([*SAFEHOLD, "vault", "settings", str(vault), "--url", server.url], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([*SAFEHOLD, "vault", "credentials", str(vault), "--out", str(creds)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    subprocess.run([*SAFEHOLD, "register", "--credentials", str(creds), "--generate-passphrase",
                    str(run / "pp")], env=env, check=True, stdout=subprocess.DEVNULL)
    out: dict[str, Sample] = {}
    try:
        for step, args in (("first backup", ["backup", str(data)]), ("unchanged", ["backup", str(data)]),
                           ("restore", ["restore", "latest", "--target", str(run / "restore")])):
            before = server.cpu() if server else 0.0
            s = timed([*SAFEHOLD, *args], env)
            if server:
                s.cpu += server.cpu() - before
            out[step] = s
    finally:
        if server:
            server.stop()
        shutil.rmtree(run, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=600)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new one in /tmp)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="safehold-bench-", dir=a.work))
    try:
        data = work / "data"
        generate(data, a.size_mb)
        warm(data)
        results: dict[str, dict[str, list[Sample]]] = {"embedded": {}, "served": {}}
        for _ in range(a.runs):
            for kind in ("embedded", "served"):  # interleaved, so drifts of the machine hit both alike
                for step, got in one_run(kind, data, work).items():
                    results[kind].setdefault(step, []).append(got)
        print(f"{a.size_mb} MB mixed tree, medians of {a.runs} runs")
        print(f"{'step':<14}{'embedded s':>12}{'served s':>10}{'ratio':>8}{'emb CPU':>9}{'srv CPU':>9}"
              f"{'emb RSS':>9}{'srv RSS':>9}")
        for step in results["embedded"]:
            e, s = results["embedded"][step], results["served"][step]
            me, ms = statistics.median(x.wall for x in e), statistics.median(x.wall for x in s)
            print(f"{step:<14}{me:>12.2f}{ms:>10.2f}{ms / me:>8.2f}"
                  f"{statistics.median(x.cpu for x in e):>9.2f}{statistics.median(x.cpu for x in s):>9.2f}"
                  f"{statistics.median(x.rss_mb for x in e):>9.0f}{statistics.median(x.rss_mb for x in s):>9.0f}")
        print("ratio = served wall / embedded wall; at least 80 % of the embedded speed means ratio <= 1.25")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
