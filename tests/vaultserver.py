"""A real `safehold vault serve` process on loopback for tests, and a TCP forwarder that breaks connections.

The server is started on port 0 and announces its address on stdout; tests wait for that line, never a delay.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from safehold.vault import tls
from safehold.vault.service import VaultService

ADMIN_TOKEN = "admin.token"


def make_vault(folder: Path, catalog_url: str | None = None, max_machines: int = 50) -> VaultService:
    """A vault folder ready to serve: catalog, certificate and admin token, as `vault init` makes them."""
    svc = VaultService.init_folder(folder, catalog_url=catalog_url, max_machines=max_machines)
    svc.tls_fingerprint = tls.generate(folder, ["127.0.0.1"])
    token_file = folder / ADMIN_TOKEN
    token_file.write_text(svc.new_admin_token() + "\n")
    token_file.chmod(0o600)
    return svc


class VaultServer:
    def __init__(self, folder: Path, env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def fingerprint(self) -> str:
        fp = tls.folder_fingerprint(self.folder)
        assert fp is not None
        return fp

    @property
    def admin_token(self) -> str:
        return (self.folder / ADMIN_TOKEN).read_text().strip()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self, deadline_s: float = 60.0) -> VaultServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "safehold.cli.main", "vault", "serve", str(self.folder), "--listen",
             "127.0.0.1:0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL, env={**os.environ, **self.env})
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if sel.select(timeout=end - time.monotonic()):
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.url = json.loads(line)["url"]
                return self
        err = self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""
        self.stop()
        raise RuntimeError(f"vault server did not start: {err}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()

    def __enter__(self) -> VaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Forwarder:
    """Forwards loopback TCP connections to `target_port`, and can break them on purpose.

    `cut_upstream_after`: close connection number `cut_conn` once that many client bytes went through.
    `drop_answer_after`: on connection `cut_conn`, once that many client bytes went through, close the
    connection instead of passing back what the server answers (the request arrived; its reply is lost).
    """

    def __init__(self, target_port: int, *, targets: list[int] | None = None, cut_conn: int = -1,
                 cut_upstream_after: int | None = None, drop_answer_after: int | None = None) -> None:
        self.targets = targets or [target_port]
        self.cut_conn = cut_conn
        self.cut_upstream_after = cut_upstream_after
        self.drop_answer_after = drop_answer_after
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.upstream_bytes = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                n = self.connections
                self.connections += 1
            try:
                server = socket.create_connection(("127.0.0.1", self.targets[n % len(self.targets)]))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(n, client, server), daemon=True).start()

    def _pump(self, n: int, client: socket.socket, server: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, server)
        sel.register(server, selectors.EVENT_READ, client)
        sent = 0
        try:
            while True:
                for key, _ in sel.select():
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    if src is client:
                        if n == self.cut_conn and self.cut_upstream_after is not None and \
                                sent + len(data) >= self.cut_upstream_after:
                            return
                        sent += len(data)
                        with self.lock:
                            self.upstream_bytes += len(data)
                        server.sendall(data)
                    elif n == self.cut_conn and self.drop_answer_after is not None and \
                            sent >= self.drop_answer_after:
                        return  # the request went through whole; its answer is lost with the connection
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            client.close()
            server.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.sock.close()
        self.thread.join(timeout=10)

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port() -> int:
    """A loopback port nothing listens on (bound once by the kernel's choice, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])
