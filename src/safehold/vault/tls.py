"""The vault server's TLS identity: a self-signed certificate made at `vault init`, or one the admin supplies,
and the fingerprint agents pin (docs/protocol.md §Transport and trust).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from safehold.errors import raise_error
from safehold.formats.credentials import fingerprint

TLS_DIR = "tls"
CERT = "cert.pem"
KEY = "key.pem"


def cert_path(folder: Path) -> Path:
    return folder / TLS_DIR / CERT


def key_path(folder: Path) -> Path:
    return folder / TLS_DIR / KEY


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(data)


def generate(folder: Path, hosts: list[str], days: int = 3650) -> str:
    """Make a self-signed certificate for `hosts` (names or addresses); returns its fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "safehold vault")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    _write_private(key_path(folder), key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    cert_path(folder).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def install(folder: Path, cert_file: Path, key_file: Path) -> str:
    """Copy an admin's certificate and key into the vault folder; returns the certificate's fingerprint."""
    fp = fingerprint_of(cert_file)
    try:
        serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise_error("InvalidArgument", what=f"--tls-key {key_file}: not an unencrypted PEM private key ({exc})")
    _write_private(key_path(folder), key_file.read_bytes())
    shutil.copyfile(cert_file, cert_path(folder))
    return fp


def fingerprint_of(cert_file: Path) -> str:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise_error("InvalidArgument", what=f"{cert_file}: not a PEM certificate ({exc})")
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def folder_fingerprint(folder: Path) -> str | None:
    path = cert_path(folder)
    return fingerprint_of(path) if path.exists() else None
