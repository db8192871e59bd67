"""A machine's key material: the master key, the subkeys derived from it, and its passphrase wrapping.

The wrapped-key file format is documented in docs/format.md §Keys. No file I/O here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass

import blake3
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.errors import raise_error

KEY_FORMAT = "safehold-key"
KEY_VERSION = 1
MIN_PASSPHRASE = 16

# Argon2id cost: about 0.1 s and 64 MiB on a current core; stored per file so it can rise later.
ARGON_T = 3
ARGON_M_KIB = 64 * 1024
ARGON_P = 2


@dataclass(frozen=True)
class MachineKeys:
    """Subkeys of one master key. Each is derived with its own BLAKE3 context string."""

    master: bytes
    id_key: bytes
    tree_id_key: bytes
    enc_key: bytes
    chunker_seed: int
    key_id: str
    auth_key: bytes  # proves to the vault that a re-registration holds this key; the vault keeps its SHA-256

    @classmethod
    def from_master(cls, master: bytes) -> MachineKeys:
        if len(master) != 32:
            raise ValueError("master key must be 32 bytes")

        def derive(context: str, length: int = 32) -> bytes:
            return blake3.blake3(master, derive_key_context=context).digest(length)

        return cls(
            master=master,
            id_key=derive("safehold 2026-11 chunk id v1"),
            tree_id_key=derive("safehold 2026-11 tree id v1"),
            enc_key=derive("safehold 2026-11 aes-256-gcm v1"),
            chunker_seed=(int.from_bytes(derive("safehold 2026-11 chunker seed v1", 8), "little") & (2**63 - 1)) or 1,
            key_id=derive("safehold 2026-11 key id v1", 16).hex(),
            auth_key=derive("safehold 2026-11 vault auth v1"),
        )

    @property
    def key_verifier(self) -> str:
        return hashlib.sha256(self.auth_key).hexdigest()

    @classmethod
    def generate(cls) -> MachineKeys:
        return cls.from_master(os.urandom(32))


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise_error("PassphraseTooWeak", reason=f"it has {len(passphrase)} characters, at least "
                    f"{MIN_PASSPHRASE} are needed")
    if not all(32 <= ord(c) < 127 for c in passphrase):
        raise_error("PassphraseTooWeak", reason="only printable ASCII characters (32-126) are allowed")


def generate_passphrase() -> str:
    # 32 characters from a 64-symbol alphabet: 192 bits.
    return base64.b64encode(os.urandom(24), altchars=b"-_").decode()


def _kek(passphrase: str, salt: bytes, t: int, m: int, p: int) -> bytes:
    return hash_secret_raw(passphrase.encode("ascii"), salt, time_cost=t, memory_cost=m,
                           parallelism=p, hash_len=32, type=Type.ID)


def _aad(key_id: str) -> bytes:
    return b"safehold wrapped key v1:" + key_id.encode()


def wrap(keys: MachineKeys, passphrase: str) -> bytes:
    """Encrypt the master key under a key derived from the passphrase; returns the key file's bytes."""
    check_passphrase(passphrase)
    salt, nonce = os.urandom(16), os.urandom(12)
    kek = _kek(passphrase, salt, ARGON_T, ARGON_M_KIB, ARGON_P)
    ct = AESGCM(kek).encrypt(nonce, keys.master, _aad(keys.key_id))
    doc = {
        "format": KEY_FORMAT, "version": KEY_VERSION, "key_id": keys.key_id,
        "kdf": {"alg": "argon2id", "t": ARGON_T, "m": ARGON_M_KIB, "p": ARGON_P,
                "salt": base64.b64encode(salt).decode()},
        "aead": "aes-256-gcm", "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ct).decode(),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


@dataclass(frozen=True)
class WrappedKey:
    key_id: str
    salt: bytes
    t: int
    m: int
    p: int
    nonce: bytes
    ciphertext: bytes


def parse(data: bytes) -> WrappedKey:
    """Validate a key file's structure; any defect is error 34506 (the stored key is not set up correctly)."""
    try:
        doc = json.loads(data)
        kdf = doc["kdf"]
        if doc["format"] != KEY_FORMAT or doc["version"] != KEY_VERSION or kdf["alg"] != "argon2id":
            raise ValueError("unknown key format or version")
        if doc["aead"] != "aes-256-gcm":
            raise ValueError("unknown cipher")
        w = WrappedKey(
            key_id=str(doc["key_id"]), salt=base64.b64decode(kdf["salt"], validate=True),
            t=int(kdf["t"]), m=int(kdf["m"]), p=int(kdf["p"]),
            nonce=base64.b64decode(doc["nonce"], validate=True),
            ciphertext=base64.b64decode(doc["ciphertext"], validate=True),
        )
        if not (1 <= w.t <= 64 and 8 <= w.m <= 4 * 1024 * 1024 and 1 <= w.p <= 64):
            raise ValueError("key derivation cost out of range")
        if len(w.salt) < 16 or len(w.nonce) != 12 or len(w.ciphertext) != 48:
            raise ValueError("field lengths are wrong")
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise_error("PassphraseNotConfigured", detail=f"key file damaged: {exc}")
    return w


def unwrap(data: bytes, passphrase: str) -> MachineKeys:
    w = parse(data)
    kek = _kek(passphrase, w.salt, w.t, w.m, w.p) if passphrase.isascii() else b"\0" * 32
    try:
        master = AESGCM(kek).decrypt(w.nonce, w.ciphertext, _aad(w.key_id))
    except InvalidTag:
        raise_error("WrongPassphrase")
    keys = MachineKeys.from_master(master)
    if keys.key_id != w.key_id:
        raise_error("PassphraseNotConfigured", detail="key id does not match the key")
    return keys


# The unlocked-key cache: the master key sealed under a fast key derived from the stored passphrase. It lives
# beside the stored passphrase (same folder, same 0600 mode) and is only used while that file exists, so it
# opens nothing the passphrase file would not; it spares every command the Argon2id cost (time and 64 MiB).
CACHE_FORMAT = b"safehold-key-cache v1\n"


def _cache_key(passphrase: str) -> bytes:
    return blake3.blake3(passphrase.encode("utf-8", "surrogateescape"),
                         derive_key_context="safehold 2026-12 unlocked key cache v1").digest()


def seal_cached(keys: MachineKeys, passphrase: str) -> bytes:
    nonce = os.urandom(12)
    return CACHE_FORMAT + nonce + AESGCM(_cache_key(passphrase)).encrypt(nonce, keys.master, _aad(keys.key_id))


def open_cached(data: bytes, passphrase: str, key_id: str) -> MachineKeys | None:
    """The keys from a cache file, or None when it is damaged, for another key or another passphrase."""
    head = len(CACHE_FORMAT)
    if not data.startswith(CACHE_FORMAT) or len(data) != head + 12 + 48:
        return None
    try:
        master = AESGCM(_cache_key(passphrase)).decrypt(data[head:head + 12], data[head + 12:], _aad(key_id))
    except InvalidTag:
        return None
    keys = MachineKeys.from_master(master)
    return keys if keys.key_id == key_id else None
