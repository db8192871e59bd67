"""`safehold register`: register this machine with a vault using a vault credentials file."""

from __future__ import annotations

import os
from pathlib import Path

import click

from safehold.agent.registration import register
from safehold.cli.context import agent_home, connect_for_registration, prompt_passphrase, read_passphrase_file
from safehold.cli.render import emit_json
from safehold.errors import raise_error
from safehold.formats.keys import check_passphrase, generate_passphrase
from safehold.i18n import _


@click.command("register")
@click.option("--credentials", "creds", required=True, type=click.Path(dir_okay=False),
              help="The vault credentials file (*.vaultcredentials) issued by the vault.")
@click.option("--passphrase-file", metavar="FILE",
              help="File holding the encryption passphrase (mode 0600). Env: SAFEHOLD_PASSPHRASE_FILE.")
@click.option("--generate-passphrase", "generate", metavar="FILE",
              help="Generate a strong passphrase and write it to FILE (mode 0600). Keep a copy off this machine.")
@click.option("--cache-folder", type=click.Path(file_okay=False),
              help="Cache folder (key file, checksum store, logs). Default: HOME/cache.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def command(obj: dict[str, str | None], creds: str, passphrase_file: str | None, generate: str | None,
            cache_folder: str | None, as_json: bool) -> None:
    """Register this machine with the vault named in a credentials file.

    The passphrase encrypts everything this machine stores; it never leaves the machine. It must have
    at least 16 printable ASCII characters. Without it no one, not even the vault, can restore the data.
    """
    if passphrase_file and generate:
        raise_error("InvalidArgument", what="give either --passphrase-file or --generate-passphrase")
    if generate:
        target = Path(generate)
        if target.exists():
            raise_error("InvalidArgument", what=f"{generate} exists; --generate-passphrase never overwrites")
        passphrase = generate_passphrase()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(passphrase + "\n")
    else:
        source = passphrase_file or os.environ.get("SAFEHOLD_PASSPHRASE_FILE")
        passphrase = read_passphrase_file(source) if source else prompt_passphrase(confirm=True)
    check_passphrase(passphrase)
    home_dir = obj.get("home")
    home = agent_home(home_dir)
    reg = register(home, Path(creds), passphrase, lambda c, token: connect_for_registration(home, c, token),
                   cache_folder=Path(cache_folder) if cache_folder else None)
    if as_json:
        emit_json({"machine_id": reg.machine_id, "vault_id": reg.vault_id, "vault": reg.vault_name,
                   "hostname": reg.hostname, "cache_folder": reg.cache_folder})
        return
    click.echo(_("Registered {host} (machine {machine}) with vault {vault}.").format(
        host=reg.hostname, machine=reg.machine_id[:8], vault=reg.vault_name))
    click.echo(_("Cache folder: {path}").format(path=reg.cache_folder))
    if generate:
        click.echo(_("Passphrase written to {path}. Store a copy somewhere safe off this machine: without it, the "
                     "backups cannot be restored.").format(path=generate))
