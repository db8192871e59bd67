"""`safehold settings`: how this agent reaches its vault (proxy and proxy credentials); shown or changed."""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
import urllib.request
from pathlib import Path

import click

from safehold.agent import settings as agent_settings
from safehold.agent.home import AgentHome, default_home, read_private
from safehold.cli.render import emit_json
from safehold.errors import raise_error
from safehold.i18n import _


@click.command("settings")
@click.option("--proxy", metavar="http://HOST:PORT", help="Reach the vault through this HTTP proxy.")
@click.option("--proxy-user", metavar="NAME", help="User name for the proxy (Basic authentication).")
@click.option("--proxy-password-file", metavar="FILE",
              help="File holding the proxy password (mode 0600); it is copied to the agent folder.")
@click.option("--no-proxy", "no_proxy", is_flag=True,
              help="Connect directly: drop the proxy setting and ignore HTTPS_PROXY in the environment.")
@click.option("--use-environment", is_flag=True,
              help="Drop the proxy setting and follow HTTPS_PROXY / NO_PROXY of the environment (the default).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def command(obj: dict[str, str | None], proxy: str | None, proxy_user: str | None,
            proxy_password_file: str | None, no_proxy: bool, use_environment: bool, as_json: bool) -> None:
    """Show this agent's network settings, or change them.

    The daemon reads the same settings, so a proxy set here also applies to scheduled backups.
    """
    home_dir = obj.get("home")
    home = AgentHome(Path(home_dir) if home_dir else default_home())
    s = agent_settings.load(home)
    if sum(bool(x) for x in (proxy, no_proxy, use_environment)) > 1:
        raise_error("InvalidArgument", what="give only one of --proxy, --no-proxy and --use-environment")
    changed = False
    if proxy:
        s = dataclasses.replace(s, proxy=agent_settings.AgentSettings.check_proxy(proxy), no_proxy=False)
        changed = True
    if no_proxy or use_environment:
        s = dataclasses.replace(s, proxy=None, proxy_user=None, no_proxy=no_proxy)
        home.proxy_password_file.unlink(missing_ok=True)
        changed = True
    if proxy_user is not None:
        if not proxy_user or ":" in proxy_user:
            raise_error("InvalidArgument", what="--proxy-user must be non-empty and without ':'")
        s = dataclasses.replace(s, proxy_user=proxy_user)
        changed = True
    if proxy_password_file:
        password = read_private(Path(proxy_password_file)).decode("utf-8").rstrip("\r\n")
        agent_settings.set_proxy_password(home, password)
    if changed:
        agent_settings.save(home, s)
    agent_settings.proxy_auth(home, s)  # a user without a password file is reported now, not at backup time
    env_raw = urllib.request.getproxies_environment().get("https")
    env = _shown(env_raw) if env_raw else None
    effective = s.proxy or (None if s.no_proxy else env)
    if as_json:
        emit_json({"proxy": s.proxy, "proxy_user": s.proxy_user, "no_proxy": s.no_proxy,
                   "environment_proxy": env, "effective_proxy": effective,
                   "proxy_password_set": home.proxy_password_file.exists()})
        return
    source = _("setting") if s.proxy else _("direct (--no-proxy)") if s.no_proxy else \
        _("environment (HTTPS_PROXY)") if env else _("none")
    click.echo(_("Proxy:        {proxy}  [{source}]").format(proxy=effective or _("none: direct connection"),
                                                             source=source))
    if s.proxy_user:
        click.echo(_("Proxy user:   {user} (password in {path})").format(user=s.proxy_user,
                                                                         path=home.proxy_password_file))
    if env and not s.proxy and not s.no_proxy and os.environ.get("NO_PROXY", os.environ.get("no_proxy")):
        click.echo(f"NO_PROXY:     {os.environ.get('NO_PROXY', os.environ.get('no_proxy'))}")


def _shown(url: str) -> str:
    """A proxy URL without the user and password an environment variable may carry."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.username or parts.password:
        return f"{parts.scheme}://***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return url
