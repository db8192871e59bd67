"""Deterministic benchmark data: a mixed tree (~1 GiB, ~31k files), a tree of 200,000 small files, a 1 % mutation.

Same seed and scale give the same bytes on every machine with the same Python (Mersenne Twister); not a backup
tool, only test data. `Mutation.revert` puts the tree back as it was, so every tool backs up the same bytes.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
BLOCK = MIB

# Compressible binary: random bytes mapped onto 16 symbols (~4 bits of entropy per byte), fast to make.
_LOW_ENTROPY = bytes(b"\x00\x01\x02\x03\x10\x20\x30\x40\xff\xfe\x7f\x41\x42\x43\x0a\x20"[i % 16] for i in range(256))

_WORDS = ("self", "return", "def", "class", "import", "from", "if", "else", "elif", "for", "while", "in", "not",
          "and", "or", "None", "True", "False", "try", "except", "raise", "with", "as", "yield", "lambda", "value",
          "result", "index", "count", "items", "data", "path", "name", "size", "buffer", "offset", "length",
          "config", "error", "status", "request", "response", "client", "server", "handle", "update", "append",
          "extend", "key", "values")


def _rng(seed: int, *salt: object) -> random.Random:
    # A separate generator per purpose keeps one part's bytes independent of another part's size.
    return random.Random(f"{seed}:" + ":".join(map(str, salt)))  # noqa: S311 - reproducible data, not secrets


def _line_pool(rng: random.Random, n: int) -> list[bytes]:
    """Source-like lines: indentation, identifiers, punctuation; unique enough that files do not dedup."""
    pool = []
    for _ in range(n):
        indent = b"    " * rng.randint(0, 3)
        words = rng.choices(_WORDS, k=rng.randint(1, 9))
        ident = f"{rng.choice(_WORDS)}_{rng.randrange(1 << 20):x}"
        pool.append(indent + f"{ident} = {'('.join(words)}{')' * (len(words) - 1)}\n".encode())
    return pool


def _text(rng: random.Random, pool: list[bytes], size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += b"".join(rng.choices(pool, k=64))
    return bytes(out[:size])


def _random(rng: random.Random, size: int) -> bytes:
    return b"".join(rng.randbytes(min(BLOCK, size - o)) for o in range(0, size, BLOCK))


def _low_entropy(rng: random.Random, size: int) -> bytes:
    return _random(rng, size).translate(_LOW_ENTROPY)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _small_size(rng: random.Random, median: float, cap: int) -> int:
    return max(0, min(cap, int(rng.lognormvariate(0, 1.0) * median)))


def make_mixed(root: Path, seed: int = 2026, scale: float = 1.0) -> None:
    """About 1 GiB in ~31k files at scale 1: source-like text, medium and large files, duplicates, shared
    regions between large files, and incompressible data (about a third of the bytes)."""
    rng = _rng(seed, "mixed")
    pool = _line_pool(_rng(seed, "lines"), 20000)
    n_small = max(20, int(30000 * scale))
    # Source tree: projects / packages / modules, ~40 files a folder, sizes around 3 KiB (lognormal).
    small: list[Path] = []
    for i in range(n_small):
        ext = rng.choice(["py", "c", "h", "md", "txt", "json"])
        path = root / "src" / f"proj{i // 2000:02}" / f"pkg{i // 40:04}" / f"mod{i:05}.{ext}"
        _write(path, _text(rng, pool, _small_size(rng, 3000, 200_000)))
        small.append(path)
    # Vendored copies: 3 % of the small files again, byte for byte, elsewhere.
    for i, src in enumerate(rng.sample(small, max(1, n_small * 3 // 100))):
        dst = root / "vendor" / f"lib{i // 50:03}" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    # Medium files, 64 KiB - 1 MiB: half compressible binary, a quarter text, a quarter incompressible.
    n_med = max(4, int(750 * scale))
    for i in range(n_med):
        size = rng.randrange(64 * 1024, MIB)
        kind = rng.choices(["bin", "txt", "rnd"], weights=[2, 1, 1])[0]
        data = {"bin": _low_entropy, "rnd": _random}[kind](rng, size) if kind != "txt" else _text(rng, pool, size)
        _write(root / "assets" / f"set{i // 100:02}" / f"item{i:04}.{kind}", data)
    # Large files: media-like (incompressible), logs and databases (compressible), two versions of a disk image
    # sharing most of their bytes (edits and an insertion that shifts the rest), and one exact copy.
    big = root / "big"
    unit = max(1, int(MIB * scale))
    for i in range(4):
        _write(big / f"video{i}.mkv", _random(rng, 40 * unit))
    for i in range(3):
        _write(big / f"server{i}.log", _text(rng, pool, 24 * unit))
    for i in range(2):
        _write(big / f"db{i}.sqlite", _low_entropy(rng, 32 * unit))
    image = bytearray(_low_entropy(rng, 48 * unit) + _random(rng, 16 * unit))
    _write(big / "disk-v1.img", bytes(image))
    for _ in range(6):
        at = rng.randrange(len(image) - 64 * 1024)
        image[at:at + 64 * 1024] = rng.randbytes(64 * 1024)
    at = rng.randrange(len(image))
    image[at:at] = rng.randbytes(100_000)
    _write(big / "disk-v2.img", bytes(image))
    shutil.copyfile(big / "video0.mkv", big / "video0-copy.mkv")


def make_many(root: Path, seed: int = 2026, count: int = 200_000) -> None:
    """`count` small files (median ~600 bytes, some empty) in folders of 100, three levels deep."""
    rng = _rng(seed, "many")
    pool = _line_pool(_rng(seed, "lines"), 20000)
    for i in range(count):
        d = root / f"a{i // 10000:03}" / f"b{i // 100:05}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06}.txt").write_bytes(_text(rng, pool, _small_size(rng, 600, 64 * 1024)))


def files(root: Path) -> Iterator[Path]:
    """Every file below root in a fixed order (sorted by path)."""
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            yield Path(dirpath, name)


@dataclass
class Mutation:
    """What `mutate` did, with the originals kept aside so that `revert` restores the tree exactly."""

    root: Path
    stash: Path
    changed: list[Path] = field(default_factory=list)
    added: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def revert(self) -> None:
        for p in self.added:
            p.unlink()
        for p in [*self.changed, *self.removed]:
            os.replace(self.stash / p.relative_to(self.root), p)  # keeps the original inode and mtime
        shutil.rmtree(self.stash)


def mutate(root: Path, stash: Path, seed: int = 2026, fraction: float = 0.01) -> Mutation:
    """Change about `fraction` of the files: edit small files, overwrite and insert regions inside large ones
    (every file of 8 MiB or more in the chosen set, and at least two large files), add and remove a few."""
    rng = _rng(seed, "mutate")
    every = list(files(root))
    n = max(1, round(len(every) * fraction))
    large = [p for p in every if p.stat().st_size >= 8 * MIB]
    chosen = rng.sample(every, n)
    chosen += [p for p in rng.sample(large, min(2, len(large))) if p not in chosen]
    m = Mutation(root, stash)

    def keep(p: Path) -> None:
        dst = stash / p.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)

    n_remove = max(1, n // 20)
    for p in chosen[:n_remove]:
        dst = stash / p.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dst)
        m.removed.append(p)
    for p in chosen[n_remove:]:
        keep(p)
        data = bytearray(p.read_bytes())
        if len(data) >= 8 * MIB:
            for _ in range(4):  # scattered in-place edits
                at = rng.randrange(len(data) - 4096)
                data[at:at + 4096] = rng.randbytes(4096)
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randrange(1, 65536))  # an insertion shifting the rest
        elif data and rng.random() < 0.5:
            at = rng.randrange(len(data))
            data[at:at + 16] = rng.randbytes(16)
        else:
            data += f"# edited {rng.randrange(1 << 30):x}\n".encode()
        with open(p, "r+b") as f:  # rewrite in place: same inode, new size/mtime
            f.write(data)
            f.truncate()
        m.changed.append(p)
    for i in range(max(1, n // 20)):
        p = rng.choice(every).with_name(f"new-{i:04}.txt")
        if p.exists() or p in m.removed:
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randrange(1, 8192)).hex().encode())
        m.added.append(p)
    return m
