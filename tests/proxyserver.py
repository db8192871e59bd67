"""A real HTTP proxy (Debian's tinyproxy) and a tiny HTTPS server, both on loopback, started by the tests.

    with TlsServer() as site, Proxy(user="alice", password="s3cret") as proxy:
        with httpx.Client(proxy=proxy.auth_url, verify=site.ssl_context) as client:
            assert client.get(site.url).status_code == 200
        assert proxy.requests_seen() == 1

`Proxy` runs `tinyproxy -d -c CONF` in the foreground with its own config, log and pid file in a temporary
folder, listening on 127.0.0.1 on a free port, allowing CONNECT to any port. It never relies on the Debian
package's system service. Readiness is detected by connecting to the port (and watching the process), never by
sleeping.

A test module gets a fixture from `proxy_fixture()` without touching conftest.py:

    proxy = proxy_fixture()
    authed_proxy = proxy_fixture("alice", "s3cret")
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import pytest

TINYPROXY = "tinyproxy"
_READY_LINE = "Accepting connections"
_CONNECT_LINE = re.compile(r"\): CONNECT (\S+) HTTP/")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProxyStartError(RuntimeError):
    pass


class Proxy:
    """tinyproxy on 127.0.0.1:`port`; with `user`/`password` it demands HTTP Basic proxy auth (407 otherwise)."""

    def __init__(self, user: str | None = None, password: str | None = None, *,
                 startup_timeout: float = 15.0) -> None:
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        if user is not None and password is not None and (not user or not password
                                                           or any(c.isspace() for c in user + password)):
            raise ValueError("tinyproxy's BasicAuth needs a non-empty user and password without spaces")
        self.user = user
        self.password = password
        self.startup_timeout = startup_timeout
        self.port = 0
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._final_log: str | None = None

    # -- addresses -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT, without credentials."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        """http://user:password@127.0.0.1:PORT (the plain url when the proxy has no auth)."""
        if self.user is None or self.password is None:
            return self.url
        return f"http://{quote(self.user, safe='')}:{quote(self.password, safe='')}@127.0.0.1:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Proxy:
        if shutil.which(TINYPROXY) is None:
            raise ProxyStartError("tinyproxy is not installed (it is listed in scripts/apt-packages.txt)")
        self.dir = Path(tempfile.mkdtemp(prefix="safehold-tinyproxy-"))
        as_root = os.geteuid() == 0
        if as_root:
            # tinyproxy drops to nobody:nogroup and then writes its log and removes its pid file here.
            self.dir.chmod(0o777)
        errors = []
        for _attempt in range(5):  # a free port can be taken by someone else before tinyproxy binds it
            self.port = _free_port()
            self._write_config(as_root)
            if self._launch():
                return self
            errors.append(self._failure_text())
            self._reap()
        self._cleanup_dir()
        raise ProxyStartError("tinyproxy did not start:\n" + "\n---\n".join(errors))

    def _write_config(self, as_root: bool) -> None:
        assert self.dir is not None
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            "Timeout 60",
            "MaxClients 50",
            f'LogFile "{self.dir / "tinyproxy.log"}"',
            "LogLevel Info",
            f'PidFile "{self.dir / "tinyproxy.pid"}"',
            "DisableViaHeader Yes",
            # no ConnectPort line: CONNECT to any port is allowed
        ]
        if as_root:
            lines += ["User nobody", "Group nogroup"]
        if self.user is not None:
            lines.append(f"BasicAuth {self.user} {self.password}")
        (self.dir / "tinyproxy.conf").write_text("\n".join(lines) + "\n")
        log = self.dir / "tinyproxy.log"
        if log.exists():
            log.unlink()

    def _launch(self) -> bool:
        assert self.dir is not None
        self._stderr = open(self.dir / "stderr.txt", "wb")  # noqa: SIM115 - closed in _reap
        self._proc = subprocess.Popen([TINYPROXY, "-d", "-c", str(self.dir / "tinyproxy.conf")],
                                      stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr)
        deadline = time.monotonic() + self.startup_timeout
        listening = False
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if not listening:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                        listening = True
                except OSError:
                    pass
            # The socket listens before tinyproxy sets its signal handlers; "Accepting connections" comes after.
            if listening and _READY_LINE in self._read_log():
                return True
            # Pace the loop by waiting on the process itself: returns at once if tinyproxy dies.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.02)
        return False

    def _failure_text(self) -> str:
        assert self.dir is not None
        rc = self._proc.poll() if self._proc else None
        err = (self.dir / "stderr.txt").read_text(errors="replace") if (self.dir / "stderr.txt").exists() else ""
        return f"port {self.port}, exit code {rc}\nstderr: {err}\nlog:\n{self._read_log()}"

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # tinyproxy's SIGTERM handler only sets a flag that its accept loop reads when poll() returns, so a
            # SIGTERM landing just before poll() would go unseen until the next connection: send one.
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                proc.terminate()
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    pass
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.5)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _cleanup_dir(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def stop(self) -> None:
        if self.dir is None:
            return
        self._reap()
        self._final_log = self._read_log()
        self._cleanup_dir()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what went through it --------------------------------------------------------------------------------
    def _read_log(self) -> str:
        if self.dir is None:
            return self._final_log or ""
        try:
            return (self.dir / "tinyproxy.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        """tinyproxy's log so far (still readable after stop())."""
        return self._read_log()

    def connect_targets(self) -> list[str]:
        """The host:port of every CONNECT request tinyproxy received, in order (authorised or not)."""
        return _CONNECT_LINE.findall(self._read_log())

    def requests_seen(self) -> int:
        """How many CONNECT requests tinyproxy received."""
        return len(self.connect_targets())


def proxy_fixture(user: str | None = None, password: str | None = None) -> Callable[[], Iterator[Proxy]]:
    """A function-scoped pytest fixture giving a started `Proxy`; assign it to a name in a test module."""

    @pytest.fixture
    def _proxy() -> Iterator[Proxy]:
        with Proxy(user, password) as p:
            yield p

    return _proxy


# -- a tiny HTTPS site to reach through the proxy ----------------------------------------------------------------

def self_signed_cert(directory: Path) -> tuple[Path, Path, bytes]:
    """A self-signed cert for 127.0.0.1 and localhost: (cert file, key file, cert PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "safehold test site")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "site.crt", directory / "site.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, cert_pem


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"hello from {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _TlsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    tls: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens in the per-connection thread, so a stalled client cannot block accept().
        with self.tls.wrap_socket(request, server_side=True) as tls_sock:
            super().finish_request(tls_sock, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # aborted handshakes and resets are expected in failure tests


class TlsServer:
    """An HTTPS server on 127.0.0.1 with a fresh self-signed cert; `ssl_context` is a client context trusting it."""

    def __init__(self) -> None:
        self.port = 0
        self.ssl_context: ssl.SSLContext | None = None
        self._dir: Path | None = None
        self._server: _TlsHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def __enter__(self) -> TlsServer:
        self._dir = Path(tempfile.mkdtemp(prefix="safehold-tls-"))
        cert_file, key_file, cert_pem = self_signed_cert(self._dir)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_file, key_file)
        self.ssl_context = ssl.create_default_context(cadata=cert_pem.decode())
        self._server = _TlsHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.tls = server_ctx
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="tls-test-site", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
