"""`safehold settings`: how this agent reaches its vault (proxy, proxy credentials, upload throttling)."""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
import urllib.request
from pathlib import Path

import click

from safehold.agent import settings as agent_settings
from safehold.agent.home import read_private
from safehold.agent.throttle import parse_days, parse_hours, parse_rate, show_rate
from safehold.cli.context import agent_home
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
@click.option("--throttle-work", metavar="RATE", help="Upload limit in work hours, as 4Mbps (512Kbps..1023Mbps).")
@click.option("--throttle-other", metavar="RATE", help="Upload limit outside work hours, as 100Mbps.")
@click.option("--work-hours", metavar="HH:MM-HH:MM", help="Work hours for throttling (default 09:00-18:00).")
@click.option("--work-days", metavar="DAYS", help="Work days for throttling, as mon-fri or mon,wed,fri.")
@click.option("--no-throttle", is_flag=True, help="Upload at full speed: drop the bandwidth limits.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def command(obj: dict[str, str | None], proxy: str | None, proxy_user: str | None,
            proxy_password_file: str | None, no_proxy: bool, use_environment: bool, throttle_work: str | None,
            throttle_other: str | None, work_hours: str | None, work_days: str | None, no_throttle: bool,
            as_json: bool) -> None:
    """Show this agent's network settings (proxy, upload throttling), or change them.

    The daemon reads the same settings, so what is set here also applies to scheduled backups.
    Throttling limits uploads to one rate in work hours on work days and another at other times.
    """
    home_dir = obj.get("home")
    home = agent_home(home_dir)
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
    s, throttle_changed = _throttle(s, throttle_work, throttle_other, work_hours, work_days, no_throttle)
    if changed or throttle_changed:
        agent_settings.save(home, s)
    agent_settings.proxy_auth(home, s)  # a user without a password file is reported now, not at backup time
    env_raw = urllib.request.getproxies_environment().get("https")
    env = _shown(env_raw) if env_raw else None
    effective = s.proxy or (None if s.no_proxy else env)
    limits = agent_settings.limits(s)
    if as_json:
        emit_json({"proxy": s.proxy, "proxy_user": s.proxy_user, "no_proxy": s.no_proxy,
                   "environment_proxy": env, "effective_proxy": effective,
                   "proxy_password_set": home.proxy_password_file.exists(),
                   "throttle": None if limits is None else {
                       "work_bps": limits.work_bps, "other_bps": limits.other_bps, "work_hours": s.work_hours,
                       "work_days": list(limits.work_days)}})
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
    if limits is None:
        click.echo(_("Throttling:   off (uploads at full speed)"))
    else:
        click.echo(_("Throttling:   {work} in work hours ({hours}, {days}), {other} at other times").format(
            work=show_rate(limits.work_bps), other=show_rate(limits.other_bps), hours=s.work_hours,
            days=",".join(limits.work_days)))


def _throttle(s: agent_settings.AgentSettings, work: str | None, other: str | None, hours: str | None,
              days: str | None, off: bool) -> tuple[agent_settings.AgentSettings, bool]:
    if off and (work or other or hours or days):
        raise_error("InvalidArgument", what="--no-throttle goes alone, without limits, hours or days")
    if off:
        return dataclasses.replace(s, throttle_work_bps=None, throttle_other_bps=None), True
    if not (work or other or hours or days):
        return s, False
    work_bps = parse_rate(work) if work else s.throttle_work_bps
    other_bps = parse_rate(other) if other else s.throttle_other_bps
    if work_bps is None or other_bps is None:
        raise_error("InvalidArgument", what="throttling needs both --throttle-work and --throttle-other")
    if hours:
        parse_hours(hours)
    if days:
        days = ",".join(parse_days(days))
    return dataclasses.replace(s, throttle_work_bps=work_bps, throttle_other_bps=other_bps,
                               work_hours=hours or s.work_hours, work_days=days or s.work_days), True


def _shown(url: str) -> str:
    """A proxy URL without the user and password an environment variable may carry."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.username or parts.password:
        return f"{parts.scheme}://***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return url
