"""`safehold doctor`: run the troubleshooting checks and say what to do about each problem."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import click

from safehold.agent import settings as agent_settings
from safehold.agent.doctor import FAILED, OK, SKIPPED, WARNING, Doctor, Finding
from safehold.agent.home import AgentHome
from safehold.agent.registration import stored_passphrase
from safehold.cli.context import agent_home, connect, read_passphrase_file
from safehold.cli.render import emit_json, error_text
from safehold.errors import SafeholdError
from safehold.i18n import N_, _

MARK = {OK: N_("ok"), WARNING: N_("warning"), FAILED: N_("FAILED"), SKIPPED: N_("skipped")}


def _summary(f: Finding) -> str:
    # `what` names a part ("proxy", "vault") by a marked message: it is translated too; other values are facts
    params = {k: _(v) if k == "what" and isinstance(v, str) else v for k, v in f.params.items()}
    try:
        return _(f.summary).format(**params)
    except (KeyError, IndexError, ValueError):
        return _(f.summary)


def _proxy(home: AgentHome) -> str | None:
    s = agent_settings.load(home)
    if s.proxy:
        return s.proxy
    if s.no_proxy:
        return None
    env = urllib.request.getproxies_environment().get("https")
    if not env:
        return None
    from safehold.agent.remote import _without_credentials  # noqa: PLC0415 - httpx only when needed

    return _without_credentials(env)


@click.command("doctor")
@click.option("--credentials", "creds", type=click.Path(dir_okay=False),
              help="Also check this vault credentials file (expiry, vault).")
@click.option("--passphrase-file", metavar="FILE", help="Passphrase to open the key with (default: the stored one).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding, then a summary.")
@click.pass_obj
def command(obj: dict[str, str | None], creds: str | None, passphrase_file: str | None, as_json: bool) -> None:
    """Check this machine's setup: vault, proxy, versions, daemon, cache folder, key, checksum store, clock,
    host name, credentials, temporary files and other processes. Exit code 0: all fine; 3: warnings; 1: a
    check failed.
    """
    home_dir = obj.get("home")
    home = agent_home(home_dir)

    def passphrase() -> str | None:
        source = passphrase_file or os.environ.get("SAFEHOLD_PASSPHRASE_FILE")
        return read_passphrase_file(source) if source else stored_passphrase(home)

    doctor = Doctor(home, lambda reg: connect(home, reg), passphrase, proxy=_proxy(home),
                    credentials_file=Path(creds) if creds else None)
    counts = {OK: 0, WARNING: 0, FAILED: 0, SKIPPED: 0}
    for f in doctor.run():
        counts[f.status] += 1
        if as_json:
            emit_json({"event": "finding", "check": f.check, "status": f.status, "message": _summary(f),
                       "error": f.error.to_dict() if f.error else None})
            continue
        click.echo(f"[{_(MARK[f.status]):^9}] {f.check:<12} {_summary(f)}")
        if f.error is not None and f.status in (WARNING, FAILED):
            _explain(f.error)
    if as_json:
        emit_json({"event": "summary", **counts})
    else:
        click.echo(_("{ok} ok, {warnings} warnings, {failed} failed, {skipped} skipped").format(
            ok=counts[OK], warnings=counts[WARNING], failed=counts[FAILED], skipped=counts[SKIPPED]))
    sys.exit(1 if counts[FAILED] else 3 if counts[WARNING] else 0)


def _explain(err: SafeholdError) -> None:
    line = _("error {id} ({code}): {message}").format(id=err.spec.id_text, code=err.spec.code,
                                                      message=error_text(err))
    click.echo(f"{'':12}{line}")
    for action in err.actions:
        try:
            text = _(action).format(**err.params)
        except (KeyError, IndexError, ValueError):
            text = _(action)
        click.echo(f"{'':14}- {text}")
