"""`safehold vault ...`: create an embedded vault, issue credentials files, show and change settings."""

from __future__ import annotations

from pathlib import Path

import click

from safehold.agent.home import write_private
from safehold.cli.render import emit_json, human_time
from safehold.errors import raise_error
from safehold.formats.credentials import DEFAULT_VALID_DAYS, EXTENSION, VaultCredentials
from safehold.vault.service import DEFAULT_MAX_MACHINES, VaultService


@click.group("vault")
def command() -> None:
    """Create and administer a vault (embedded: a local folder)."""


def _write_credentials(creds: VaultCredentials, out: str | None, vault_dir: Path) -> Path:
    day = human_time(creds.issued_ns)[:10]
    path = Path(out) if out else Path.cwd() / f"{creds.vault_name}_{day}{EXTENSION}"
    if path.suffix.lower() != EXTENSION:
        raise_error("InvalidArgument", what=f"the credentials file name must end in {EXTENSION}")
    write_private(path, creds.encode())
    return path


def _report_credentials(creds: VaultCredentials, path: Path, as_json: bool) -> None:
    if as_json:
        emit_json({"credentials_file": str(path), "vault_id": creds.vault_id, "expires": human_time(creds.expires_ns)})
    else:
        click.echo(f"Credentials file: {path} (valid until {human_time(creds.expires_ns)}; "
                   "issuing a newer one revokes it)")


@command.command("init")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--name", help="Vault name shown to agents. Default: the folder name.")
@click.option("--max-machines", type=int, default=DEFAULT_MAX_MACHINES, show_default=True)
@click.option("--credentials-out", metavar="FILE", help=f"Where to write the first credentials file (*{EXTENSION}).")
@click.option("--valid-days", type=float, default=DEFAULT_VALID_DAYS, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def init(path: str, name: str | None, max_machines: int, credentials_out: str | None, valid_days: float,
         as_json: bool) -> None:
    """Create a vault in the folder PATH and write its first credentials file."""
    svc = VaultService.init_folder(Path(path), name=name, max_machines=max_machines)
    creds = svc.issue_credentials(valid_days)
    out = _write_credentials(creds, credentials_out, Path(path))
    if not as_json:
        click.echo(f"Vault {svc.name} ({svc.vault_id}) created in {Path(path).absolute()}")
    _report_credentials(creds, out, as_json)


@command.command("credentials")
@click.argument("path", type=click.Path(file_okay=False, exists=True))
@click.option("--out", metavar="FILE", help=f"File to write (*{EXTENSION}).")
@click.option("--valid-days", type=float, default=DEFAULT_VALID_DAYS, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def credentials(path: str, out: str | None, valid_days: float, as_json: bool) -> None:
    """Issue a new credentials file for the vault at PATH; older unused ones stop working."""
    svc = VaultService.open_folder(Path(path))
    creds = svc.issue_credentials(valid_days)
    _report_credentials(creds, _write_credentials(creds, out, Path(path)), as_json)


@command.command("settings")
@click.argument("path", type=click.Path(file_okay=False, exists=True))
@click.option("--max-machines", type=int, help="How many machines may register.")
@click.option("--json", "as_json", is_flag=True)
def settings(path: str, max_machines: int | None, as_json: bool) -> None:
    """Show the vault's settings, or change them."""
    svc = VaultService.open_folder(Path(path))
    if max_machines is not None:
        svc.set_max_machines(max_machines)
    info = svc.info()
    machines = svc.machines()
    if as_json:
        emit_json({"vault_id": info.vault_id, "name": info.name, "max_machines": info.max_machines,
                   "machines": machines})
        return
    click.echo(f"Vault:        {info.name} ({info.vault_id})")
    click.echo(f"Machines:     {len(machines)} of at most {info.max_machines}")
    for m in machines:
        click.echo(f"  {m['machine_id'][:8]}  {m['hostname']}  registered {human_time(m['registered_ns'])}")
