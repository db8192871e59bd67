"""`safehold vault serve`: run a vault folder as the HTTPS service agents register with (docs/protocol.md).

Stateless apart from the catalog and the blob store, so several processes may serve one vault (PostgreSQL
catalog) behind a load balancer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import click

from safehold.cli.cmd_vault import open_vault
from safehold.cli.render import emit_json
from safehold.errors import raise_error
from safehold.i18n import _
from safehold.vault import tls

log = logging.getLogger("safehold.vault")


def _announce(server: Any, as_json: bool, fingerprint: str | None) -> None:
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    url = f"https://{host}:{port}"
    if as_json:
        emit_json({"event": "listening", "url": url, "tls_fingerprint": fingerprint})
    else:
        click.echo(_("Serving vault on {url} (certificate {fingerprint}); Ctrl-C stops.").format(
            url=url, fingerprint=fingerprint))


async def _housekeeping(svc: Any, interval_s: float) -> None:
    """Housekeeping on the server's own schedule, in a worker thread so requests keep flowing."""
    from safehold.vault.housekeeping import Housekeeping  # noqa: PLC0415

    hk = Housekeeping(svc)
    while True:
        await asyncio.sleep(interval_s)
        try:
            fig = await asyncio.to_thread(hk.run)
        except Exception:  # a failed run is logged and tried again next time; the server keeps serving
            log.exception("housekeeping failed")
            continue
        if fig is not None:
            log.info("housekeeping: %s", fig)


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise_error("InvalidArgument", what="--listen takes HOST:PORT (port 0 picks a free one)")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command("serve")
@click.argument("path", type=click.Path(file_okay=False, exists=True))
@click.option("--listen", default="127.0.0.1:8443", show_default=True,
              help="Address and port to listen on; 0.0.0.0:PORT for all interfaces.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True)
@click.option("--housekeeping-interval", type=click.IntRange(0, 7 * 24 * 60), default=60, show_default=True,
              help="Minutes between housekeeping runs (retention and garbage collection); 0 turns it off. With "
                   "several servers on one PostgreSQL catalog, one runs it at a time.")
@click.option("--json", "as_json", is_flag=True, help="Announce the address as a JSON line.")
def command(path: str, listen: str, log_level: str, housekeeping_interval: int, as_json: bool) -> None:
    """Serve the vault in folder PATH over HTTPS with its certificate (PATH/tls)."""
    folder = Path(path)
    host, port = _listen(listen)
    svc = open_vault(folder)
    cert, key = tls.cert_path(folder), tls.key_path(folder)
    if not cert.exists() or not key.exists():
        raise_error("ServerStartFailed", reason=f"{cert} or {key} is missing; a vault made before TLS support "
                                                "needs them, or give your own there")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise_error("ServerStartFailed", reason=f"the TLS certificate or key cannot be used ({exc})")
    import uvicorn  # noqa: PLC0415 - the server stack loads only for this command

    from safehold.vault.server import create_app  # noqa: PLC0415

    class Server(uvicorn.Server):
        """Says where it listens once the socket is bound, so scripts and tests wait for a line, not a delay."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                _announce(self, as_json, svc.tls_fingerprint)
                if housekeeping_interval:
                    self.housekeeping = asyncio.create_task(_housekeeping(svc, housekeeping_interval * 60))

    config = uvicorn.Config(create_app(svc), host=host, port=port, ssl_certfile=str(cert), ssl_keyfile=str(key),
                            http="httptools", loop="asyncio", log_level=log_level, access_log=log_level in
                            ("info", "debug"), timeout_keep_alive=30, server_header=False)
    server = Server(config)
    try:
        asyncio.run(server.serve())
    except OSError as exc:
        raise_error("ServerStartFailed", reason=str(exc))
    if not server.started:
        raise_error("ServerStartFailed", reason=f"could not listen on {host}:{port}")
