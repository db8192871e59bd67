"""`safehold vault ...`: create a vault, issue credentials files, show and change settings.

A vault is addressed by its folder (on the vault's host) or by its https URL with the admin token (anywhere).
`vault serve` lives in cmd_vault_serve.py.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from safehold.agent.home import read_private, write_private
from safehold.cli.render import emit_json, human_time
from safehold.errors import raise_error
from safehold.formats import credentials as credfmt
from safehold.formats.credentials import DEFAULT_VALID_DAYS, EXTENSION, VaultCredentials
from safehold.i18n import _
from safehold.vault import tls
from safehold.vault.service import DEFAULT_MAX_MACHINES, VaultService

if TYPE_CHECKING:
    from safehold.agent.remote import RemoteAdmin

ADMIN_TOKEN = "admin.token"  # noqa: S105 - a file name


@click.group("vault")
def command() -> None:
    """Create and administer a vault: a local folder, served to other machines with `vault serve`."""


def open_vault(folder: Path) -> VaultService:
    svc = VaultService.open_folder(folder)
    svc.tls_fingerprint = tls.folder_fingerprint(folder)
    return svc


def _write_credentials(creds: VaultCredentials, out: str | None) -> Path:
    day = human_time(creds.issued_ns)[:10]
    path = Path(out) if out else Path.cwd() / f"{creds.vault_name}_{day}{EXTENSION}"
    if path.suffix.lower() != EXTENSION:
        raise_error("InvalidArgument", what=f"the credentials file name must end in {EXTENSION}")
    write_private(path, creds.encode())
    return path


def _report_credentials(creds: VaultCredentials, path: Path, as_json: bool) -> None:
    if as_json:
        emit_json({"credentials_file": str(path), "vault_id": creds.vault_id, "url": creds.url,
                   "tls_fingerprint": creds.tls_fingerprint, "expires": human_time(creds.expires_ns)})
    else:
        click.echo(_("Credentials file: {path} (valid until {until}; issuing a newer one revokes it)").format(
            path=path, until=human_time(creds.expires_ns)))


def _https_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise_error("InvalidArgument", what="--url takes https://HOST[:PORT], the address agents will use")
    return url.rstrip("/")


class Remote:
    """Options that address a vault server for administration."""

    @staticmethod
    def options(f: Any) -> Any:
        f = click.option("--admin-token-file", metavar="FILE", envvar="SAFEHOLD_ADMIN_TOKEN_FILE",
                         help="With an https VAULT: the vault's admin token (VAULT/admin.token on its host). "
                              "Env: SAFEHOLD_ADMIN_TOKEN_FILE.")(f)
        return click.option("--fingerprint", metavar="sha256:HEX", envvar="SAFEHOLD_VAULT_FINGERPRINT",
                            help="With an https VAULT: its certificate fingerprint, as `vault init` printed it. "
                                 "Env: SAFEHOLD_VAULT_FINGERPRINT.")(f)

    @staticmethod
    def admin(vault: str, token_file: str | None, fingerprint: str | None) -> RemoteAdmin:
        from safehold.agent.remote import RemoteAdmin  # noqa: PLC0415 - httpx loads only for a vault server

        if not token_file or not fingerprint:
            raise_error("InvalidArgument", what="an https VAULT needs --admin-token-file and --fingerprint")
        token = read_private(Path(token_file)).decode("ascii", errors="replace").strip()
        return RemoteAdmin(_https_url(vault), fingerprint, token=token)


@command.command("init")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--name", help="Vault name shown to agents. Default: the folder name.")
@click.option("--max-machines", type=int, default=DEFAULT_MAX_MACHINES, show_default=True)
@click.option("--catalog", "catalog_url", metavar="URL",
              help="Keep the catalog in PostgreSQL: postgresql+psycopg://USER@HOST[:PORT]/DATABASE, an empty "
                   "database for this vault alone; put the password in ~/.pgpass (or PGPASSFILE), not in the URL. "
                   "Default: SQLite in the folder.")
@click.option("--url", help="https://HOST:PORT where agents reach `vault serve`. Without it, credentials files "
                            "name the folder (embedded vault, same machine).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True),
              help="Your own PEM certificate for the server. Default: a self-signed one is made.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), help="The key of --tls-cert (PEM).")
@click.option("--credentials-out", metavar="FILE", help=f"Where to write the first credentials file (*{EXTENSION}).")
@click.option("--valid-days", type=float, default=DEFAULT_VALID_DAYS, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def init(path: str, name: str | None, max_machines: int, url: str | None, tls_cert: str | None,
         tls_key: str | None, credentials_out: str | None, valid_days: float, as_json: bool,
         catalog_url: str | None = None) -> None:
    """Create a vault in the folder PATH and write its first credentials file.

    Also makes the server's TLS certificate (PATH/tls) and the admin token (PATH/admin.token, mode 0600).
    """
    if (tls_cert is None) != (tls_key is None):
        raise_error("InvalidArgument", what="give both --tls-cert and --tls-key, or neither")
    public = _https_url(url) if url else None
    folder = Path(path)
    svc = VaultService.init_folder(folder, name=name, max_machines=max_machines, catalog_url=catalog_url)
    if tls_cert and tls_key:
        fp = tls.install(folder, Path(tls_cert), Path(tls_key))
    else:
        host = urlsplit(public).hostname if public else None
        fp = tls.generate(folder, [host or socket.gethostname()])
    svc.tls_fingerprint = fp
    write_private(folder / ADMIN_TOKEN, (svc.new_admin_token() + "\n").encode())
    if public:
        svc.set_public_url(public, fp)
    creds = svc.issue_credentials(valid_days)
    out = _write_credentials(creds, credentials_out)
    if as_json:
        emit_json({"vault_id": svc.vault_id, "name": svc.name, "path": str(folder.absolute()), "url": public,
                   "tls_fingerprint": fp, "admin_token_file": str((folder / ADMIN_TOKEN).absolute()),
                   "credentials_file": str(out), "expires": human_time(creds.expires_ns)})
        return
    click.echo(_("Vault {name} ({id}) created in {path}").format(name=svc.name, id=svc.vault_id,
                                                                 path=folder.absolute()))
    click.echo(_("TLS certificate fingerprint: {fingerprint}").format(fingerprint=fp))
    click.echo(_("Admin token: {path} (mode 0600)").format(path=(folder / ADMIN_TOKEN).absolute()))
    _report_credentials(creds, out, False)


@command.command("credentials")
@click.argument("vault")
@click.option("--out", metavar="FILE", help=f"File to write (*{EXTENSION}).")
@click.option("--valid-days", type=float, default=DEFAULT_VALID_DAYS, show_default=True)
@Remote.options
@click.option("--json", "as_json", is_flag=True)
def credentials(vault: str, out: str | None, valid_days: float, admin_token_file: str | None,
                fingerprint: str | None, as_json: bool) -> None:
    """Issue a new credentials file for VAULT (a folder, or https://HOST:PORT); older unused ones stop working."""
    if vault.startswith("https://"):
        data = Remote.admin(vault, admin_token_file, fingerprint).issue_credentials(valid_days)
        creds = credfmt.parse("issued" + EXTENSION, data)
    else:
        creds = open_vault(_folder(vault)).issue_credentials(valid_days)
    _report_credentials(creds, _write_credentials(creds, out), as_json)


@command.command("settings")
@click.argument("vault")
@click.option("--max-machines", type=int, help="How many machines may register.")
@click.option("--url", help="https://HOST:PORT that new credentials files send agents to.")
@Remote.options
@click.option("--json", "as_json", is_flag=True)
def settings(vault: str, max_machines: int | None, url: str | None, admin_token_file: str | None,
             fingerprint: str | None, as_json: bool) -> None:
    """Show the settings and machines of VAULT (a folder, or https://HOST:PORT), or change them."""
    if vault.startswith("https://"):
        admin = Remote.admin(vault, admin_token_file, fingerprint)
        changes: dict[str, Any] = {}
        if max_machines is not None:
            changes["max_machines"] = max_machines
        if url is not None:
            changes["public_url"] = _https_url(url)
        doc = admin.settings(**changes)
        machines = admin.machines()
    else:
        svc = open_vault(_folder(vault))
        if max_machines is not None:
            svc.set_max_machines(max_machines)
        if url is not None:
            svc.set_public_url(_https_url(url), svc.tls_fingerprint)
        info = svc.info()
        machines = svc.machines()
        doc = {"vault_id": info.vault_id, "name": info.name, "max_machines": info.max_machines,
               "public_url": svc.public_url(), "tls_fingerprint": svc.tls_fingerprint}
    if as_json:
        emit_json({**doc, "machines": machines})
        return
    click.echo(_("Vault:        {name} ({id})").format(name=doc["name"], id=doc["vault_id"]))
    click.echo(_("URL:          {url}").format(url=doc.get("public_url") or
                                              _("(embedded: credentials name the folder)")))
    click.echo(_("Certificate:  {fingerprint}").format(fingerprint=doc.get("tls_fingerprint") or "-"))
    click.echo(_("Machines:     {count} of at most {limit}").format(count=len(machines), limit=doc["max_machines"]))
    for m in machines:
        click.echo("  " + _("{machine}  {host}  registered {when}").format(
            machine=m["machine_id"][:8], host=m["hostname"], when=human_time(m["registered_ns"])))


@command.command("admin-token")
@click.argument("path", type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True)
def admin_token(path: str, as_json: bool) -> None:
    """Replace the admin token of the vault in folder PATH; the old one stops working at once."""
    folder = _folder(path)
    svc = open_vault(folder)
    write_private(folder / ADMIN_TOKEN, (svc.new_admin_token() + "\n").encode())
    if as_json:
        emit_json({"admin_token_file": str((folder / ADMIN_TOKEN).absolute())})
    else:
        click.echo(_("New admin token in {path} (mode 0600); the old one no longer works.").format(
            path=(folder / ADMIN_TOKEN).absolute()))


def _folder(vault: str) -> Path:
    if "://" in vault:
        raise_error("InvalidArgument", what="VAULT is a folder or an https:// URL")
    path = Path(vault)
    if not path.is_dir():
        raise_error("VaultNotFound", path=vault)
    return path
