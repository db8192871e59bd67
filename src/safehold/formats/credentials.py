"""The vault credentials file (`*.vaultcredentials`): what a machine needs to register with a vault once.

Layout in docs/format.md §Vault credentials. Parsing validates everything; any defect is error 34513.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from safehold.errors import raise_error

EXTENSION = ".vaultcredentials"
FORMAT = "safehold-vault-credentials"
VERSION = 1
DEFAULT_VALID_DAYS = 10


@dataclass(frozen=True)
class VaultCredentials:
    vault_id: str
    vault_name: str
    url: str  # file:///path for an embedded vault, https://host:port for a vault server
    tls_fingerprint: str | None  # "sha256:<hex>" of the server certificate; None for file:// vaults
    credential_id: str
    secret: bytes
    issued_ns: int
    expires_ns: int

    def encode(self) -> bytes:
        doc = {
            "format": FORMAT, "version": VERSION,
            "vault_id": self.vault_id, "vault_name": self.vault_name, "url": self.url,
            "tls_fingerprint": self.tls_fingerprint, "credential_id": self.credential_id,
            "secret": base64.urlsafe_b64encode(self.secret).decode(),
            "issued_ns": self.issued_ns, "expires_ns": self.expires_ns,
        }
        return (json.dumps(doc, indent=2) + "\n").encode()


def fingerprint(cert_der: bytes) -> str:
    """How a credentials file names the vault's TLS certificate: SHA-256 of its DER bytes."""
    return "sha256:" + hashlib.sha256(cert_der).hexdigest()


def secret_digest(secret: bytes) -> str:
    """What the vault stores in place of the secret."""
    return hashlib.sha256(b"safehold credential secret v1:" + secret).hexdigest()


def parse(name: str, data: bytes) -> VaultCredentials:
    if not name.lower().endswith(EXTENSION):
        raise_error("VaultCredentialsInvalid", reason=f"the file name must end in {EXTENSION}")
    try:
        doc = json.loads(data)
        if doc["format"] != FORMAT or doc["version"] != VERSION:
            raise ValueError("unknown format or version")
        creds = VaultCredentials(
            vault_id=_text(doc["vault_id"]), vault_name=str(doc["vault_name"]), url=_text(doc["url"]),
            tls_fingerprint=None if doc["tls_fingerprint"] is None else _text(doc["tls_fingerprint"]),
            credential_id=_text(doc["credential_id"]),
            secret=base64.urlsafe_b64decode(_text(doc["secret"])),
            issued_ns=int(doc["issued_ns"]), expires_ns=int(doc["expires_ns"]),
        )
        if len(creds.secret) != 32:
            raise ValueError("secret has the wrong length")
        if not creds.url.startswith(("file://", "https://")):
            raise ValueError("vault URL scheme is not supported")
        if creds.url.startswith("https://") and not _is_fingerprint(creds.tls_fingerprint):
            raise ValueError("an https vault URL needs a sha256 TLS fingerprint")
        if creds.expires_ns <= creds.issued_ns:
            raise ValueError("expiry is before issue")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError, OverflowError, RecursionError) as exc:
        raise_error("VaultCredentialsInvalid", reason=f"the file is damaged ({exc})")
    return creds


def _text(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise ValueError("a text field is empty or not text")
    return value


def _is_fingerprint(value: str | None) -> bool:
    return value is not None and value.startswith("sha256:") and len(value) == 71 and \
        all(c in "0123456789abcdef" for c in value[7:])
