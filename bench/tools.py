"""The tools under test, each driven through its own command line: safehold, restic, borg, and `cp -a`.

Each tool gets a fresh repository, cache and key in its own run folder; secrets go through files or the
environment, never the command line. Encryption is on for every tool.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import gnutime

REPO = Path(__file__).resolve().parent.parent
SAFEHOLD = REPO / ".venv" / "bin" / "safehold"


def tree_bytes(root: Path) -> int:
    """Apparent size of every file below root (what the repository holds, without file-system slack)."""
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _quiet(args: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise gnutime.CommandFailed(f"{args[0]} {args[1]} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def _secret_file(path: Path) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return path


class Tool:
    """A backup tool in one run folder: `prepare` makes the repository, then backups and one restore."""

    name = ""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.repo = run / "repo"
        self.env = dict(os.environ)

    def prepare(self) -> None:
        raise NotImplementedError

    def backup(self, source: Path) -> gnutime.Usage:
        raise NotImplementedError

    def restore(self, target: Path) -> gnutime.Usage:
        raise NotImplementedError

    def stored_bytes(self) -> int:
        return tree_bytes(self.repo)

    @staticmethod
    def version() -> str:
        raise NotImplementedError


class Safehold(Tool):
    """Embedded vault in a folder; the agent folder and its passphrase file in the run folder."""

    name = "safehold"

    def prepare(self) -> None:
        self.env["SAFEHOLD_HOME"] = str(self.run / "agent")
        creds = self.run / "bench.vaultcredentials"
        _quiet([str(SAFEHOLD), "vault", "init", str(self.repo), "--credentials-out", str(creds)], self.env)
        _quiet([str(SAFEHOLD), "register", "--credentials", str(creds), "--generate-passphrase",
                str(self.run / "passphrase")], self.env)

    def backup(self, source: Path) -> gnutime.Usage:
        return gnutime.run([str(SAFEHOLD), "backup", str(source)], self.env)

    def restore(self, target: Path) -> gnutime.Usage:
        return gnutime.run([str(SAFEHOLD), "restore", "latest", "--target", str(target)], self.env)

    @staticmethod
    def version() -> str:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        out = subprocess.run([str(SAFEHOLD), "--version"], capture_output=True, text=True).stdout.strip()
        return f"{out.rsplit(' ', 1)[-1]} (commit {commit})" if commit else out


class Restic(Tool):
    """restic's defaults (repository format 2, compression auto); password from RESTIC_PASSWORD_FILE."""

    name = "restic"

    def prepare(self) -> None:
        self.env.update(RESTIC_PASSWORD_FILE=str(_secret_file(self.run / "password")),
                        RESTIC_REPOSITORY=str(self.repo), RESTIC_CACHE_DIR=str(self.run / "cache"))
        _quiet(["restic", "init"], self.env)

    def backup(self, source: Path) -> gnutime.Usage:
        return gnutime.run(["restic", "backup", "--host", "bench", str(source)], self.env)

    def restore(self, target: Path) -> gnutime.Usage:
        return gnutime.run(["restic", "restore", "latest", "--target", str(target)], self.env)

    @staticmethod
    def version() -> str:
        return subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.split()[1]


class Borg(Tool):
    """borg 1.2, repokey-blake2 encryption, `--compression zstd` (level 3); passphrase read from a file into
    BORG_PASSPHRASE; cache, config and keys in the run folder (BORG_BASE_DIR)."""

    name = "borg"
    archives = 0

    def prepare(self) -> None:
        passphrase = _secret_file(self.run / "passphrase").read_text().strip()
        self.env.update(BORG_PASSPHRASE=passphrase, BORG_BASE_DIR=str(self.run / "base"))
        _quiet(["borg", "init", "--encryption", "repokey-blake2", str(self.repo)], self.env)

    def backup(self, source: Path) -> gnutime.Usage:
        self.archives += 1
        return gnutime.run(["borg", "create", "--compression", "zstd", f"{self.repo}::b{self.archives}",
                            str(source)], self.env)

    def restore(self, target: Path) -> gnutime.Usage:
        target.mkdir(parents=True, exist_ok=True)  # borg extracts into the current folder
        return gnutime.run(["borg", "extract", f"{self.repo}::b{self.archives}"], self.env, cwd=target)

    @staticmethod
    def version() -> str:
        return subprocess.run(["borg", "--version"], capture_output=True, text=True).stdout.split()[-1]


def copy_tree(source: Path, target: Path) -> gnutime.Usage:
    """The baseline for restore: `cp -a` of the same tree, recreating its absolute path below target."""
    dest = target / source.relative_to("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return gnutime.run(["cp", "-a", str(source), str(dest)])


def cp_version() -> str:
    return subprocess.run(["cp", "--version"], capture_output=True, text=True).stdout.splitlines()[0]


TOOLS: dict[str, type[Tool]] = {"safehold": Safehold, "restic": Restic, "borg": Borg}


def remove(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
