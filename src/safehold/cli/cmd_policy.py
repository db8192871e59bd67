"""`safehold policy show|set`: what this machine backs up, when, and how long the vault keeps it."""

from __future__ import annotations

import os

import click
import msgspec

from safehold.agent import policyfile
from safehold.agent.home import AgentHome
from safehold.agent.scheduler import Scheduler, local_zone_name
from safehold.agent.throttle import parse_days
from safehold.cli.context import agent_home, connect
from safehold.cli.render import emit_json
from safehold.errors import SafeholdError, raise_error
from safehold.formats import policy as pf
from safehold.formats.policy import Policy
from safehold.i18n import _
from safehold.model import MachineId
from safehold.ports import SystemClock


def _home(obj: dict[str, str | None]) -> AgentHome:
    home_dir = obj.get("home")
    home = agent_home(home_dir)
    home.load()  # a policy belongs to a registered machine
    return home


@click.group("policy")
def command() -> None:
    """Show or change the backup policy: folders, schedule and retention."""


@command.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(obj: dict[str, str | None], as_json: bool) -> None:
    """Show the policy and when the next scheduled backup runs."""
    home = _home(obj)
    p = policyfile.load(home)
    if p is None:
        raise_error("PolicyNotSet")
    nxt = Scheduler(home.schedule_state_file, SystemClock(), lambda: p).next_time() if p.schedule else None
    if as_json:
        emit_json({"policy": msgspec.to_builtins(p), "points_kept_at_most": pf.points_kept(p),
                   "next_run": nxt.isoformat() if nxt else None})
        return
    for line in describe(p):
        click.echo(line)
    click.echo(_("Next backup:  {when}").format(
        when=nxt.strftime("%Y-%m-%d %H:%M %Z") if nxt else _("none (on demand only)")))


def describe(p: Policy) -> list[str]:
    f, r = p.files, p.retention
    out = [_("Include:      {paths}").format(paths=", ".join(f.include))]
    if f.exclude or f.exclude_types:
        out.append(_("Exclude:      {items}").format(items=", ".join([*f.exclude, *f.exclude_types])))
    if f.non_recursive:
        out.append(_("Top level only: {paths}").format(paths=", ".join(f.non_recursive)))
    if p.schedule is None:
        out.append(_("Schedule:     off (backups run only when started by hand)"))
    elif p.schedule.frequency == pf.DAILY:
        out.append(_("Schedule:     daily at {times}").format(times=", ".join(p.schedule.times)))
    else:
        out.append(_("Schedule:     weekly on {days} at {times}").format(
            days=",".join(p.schedule.days), times=", ".join(p.schedule.times)))
    keep = []
    if r.daily_days:
        keep.append(_("daily points {n} days").format(n=r.daily_days))
    if r.weekly_weeks:
        keep.append(_("weekly points ({days}) {n} weeks").format(days=",".join(r.weekly_days), n=r.weekly_weeks))
    if r.monthly_months:
        keep.append(_("monthly points ({anchor}) {n} months").format(anchor=r.monthly_on, n=r.monthly_months))
    if r.yearly_years:
        keep.append(_("yearly points ({month} {anchor}) {n} years").format(month=r.yearly_month, anchor=r.yearly_on,
                                                                           n=r.yearly_years))
    out.append(_("Retention:    {rules} (time zone {zone})").format(rules="; ".join(keep), zone=r.timezone))
    out.append(_("At most {n} recovery points kept by this policy.").format(n=f"{pf.points_kept(p):,}"))
    return out


def _days(text: str | None) -> tuple[str, ...] | None:
    """"sat", "mon,thu" or "mon-fri": exact day names (mon..sun), ranges going forward in the week."""
    if text is None:
        return None
    try:
        return parse_days(text)
    except SafeholdError:
        raise_error("PolicyInvalid", reason=f"days {text!r}: use mon..sun, as sat, mon,thu or mon-fri")


def _abs(paths: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(os.path.normpath(os.path.abspath(p)) for p in paths)


@command.command("set")
@click.option("--include", "-i", multiple=True, metavar="PATH", help="A folder or file to back up (repeatable).")
@click.option("--exclude", "-e", multiple=True, metavar="PATTERN",
              help="Leave out a path, or items matching a pattern ('/' in it: full path, else the name).")
@click.option("--exclude-type", multiple=True, metavar=".EXT", help="Leave out files of this type, as .tmp.")
@click.option("--non-recursive", multiple=True, metavar="PATH",
              help="Back up this included folder's files but not its subfolders.")
@click.option("--remove", multiple=True, metavar="PATH", help="Stop backing up this path (or drop this exclusion).")
@click.option("--daily", "frequency", flag_value=pf.DAILY, help="Back up every day.")
@click.option("--weekly", "days", metavar="DAYS", help="Back up weekly on these days, as sat or mon,thu.")
@click.option("--at", "times", multiple=True, metavar="HH:MM", help="Time of day to back up (up to three).")
@click.option("--no-schedule", is_flag=True, help="No scheduled backups: only on demand.")
@click.option("--keep-daily", type=int, metavar="DAYS", help="Keep daily points this many days (7-9999, 0: off).")
@click.option("--keep-weekly", type=int, metavar="WEEKS", help="Keep weekly points (4-5163 weeks, 0: off).")
@click.option("--weekly-on", metavar="DAYS", help="Days whose point is the weekly one (default sat).")
@click.option("--keep-monthly", type=int, metavar="MONTHS", help="Keep monthly points (3-1188 months, 0: off).")
@click.option("--monthly-on", metavar="ANCHOR", help="Which point is the monthly one: day-1..day-28, day-last, "
                                                      "or first|second|third|fourth|last-WEEKDAY (default last-sat).")
@click.option("--keep-yearly", type=int, metavar="YEARS", help="Keep yearly points (1-99 years, 0: off).")
@click.option("--yearly-on", metavar="MON:ANCHOR", help="Which point is the yearly one, as dec:last-sat or jan:day-1.")
@click.option("--timezone", metavar="ZONE", help="Time zone of the schedule's anchors (default: this machine's).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def set_(obj: dict[str, str | None], include: tuple[str, ...], exclude: tuple[str, ...],
         exclude_type: tuple[str, ...], non_recursive: tuple[str, ...], remove: tuple[str, ...],
         frequency: str | None, days: str | None, times: tuple[str, ...], no_schedule: bool,
         keep_daily: int | None, keep_weekly: int | None, weekly_on: str | None, keep_monthly: int | None,
         monthly_on: str | None, keep_yearly: int | None, yearly_on: str | None, timezone: str | None,
         as_json: bool) -> None:
    """Create or change the backup policy; options not given keep their current values.

    \b
    safehold policy set --include /home --include /etc --exclude '*.tmp' --daily --at 02:00 --at 14:00 \\
        --keep-daily 30 --keep-weekly 12 --keep-monthly 12 --monthly-on last-sat
    """
    home = _home(obj)
    old = policyfile.load(home)
    p = old or Policy(retention=pf.Retention(timezone=local_zone_name()))
    files = p.files
    gone = set(_abs(remove)) | set(remove)
    files = msgspec.structs.replace(
        files,
        include=_merge(files.include, _abs(include), gone),
        exclude=_merge(files.exclude, exclude, gone),
        exclude_types=_merge(files.exclude_types,
                             tuple((e if e.startswith(".") else f".{e}").lower() for e in exclude_type), gone),
        non_recursive=_merge(files.non_recursive, _abs(non_recursive), gone))
    schedule = p.schedule
    if no_schedule:
        if frequency or days or times:
            raise_error("PolicyInvalid", reason="--no-schedule goes without --daily, --weekly and --at")
        schedule = None
    elif frequency or days or times:
        if frequency and days:
            raise_error("PolicyInvalid", reason="give --daily or --weekly DAYS, not both")
        base = schedule or pf.Schedule()
        new_days = _days(days)
        schedule = pf.Schedule(frequency=pf.WEEKLY if new_days else pf.DAILY if frequency else base.frequency,
                               times=tuple(sorted(times)) if times else base.times,
                               days=new_days if new_days else () if frequency else base.days)
    r = p.retention
    changes: dict[str, object] = {}
    for name, value in (("daily_days", keep_daily), ("weekly_weeks", keep_weekly),
                        ("monthly_months", keep_monthly), ("yearly_years", keep_yearly)):
        if value is not None:
            changes[name] = value or None
    if weekly_on is not None:
        changes["weekly_days"] = _days(weekly_on)
    if monthly_on is not None:
        changes["monthly_on"] = monthly_on.lower()
    if yearly_on is not None:
        month, _sep, anchor = yearly_on.lower().partition(":")
        if not anchor:
            raise_error("PolicyInvalid", reason=f"--yearly-on {yearly_on!r}: give MONTH:ANCHOR, as dec:last-sat")
        changes["yearly_month"], changes["yearly_on"] = month[:3], anchor
    if timezone is not None:
        changes["timezone"] = timezone
    if schedule is not None and schedule.frequency == pf.WEEKLY and keep_daily is None and r.daily_days and \
            old is None:
        changes["daily_days"] = None  # a new weekly policy starts with weekly retention, not the daily default
        changes.setdefault("weekly_weeks", 12)
        changes.setdefault("weekly_days", schedule.days[:1])
    r = msgspec.structs.replace(r, **changes)
    new = pf.check(Policy(files=files, schedule=schedule, retention=r))
    if old is None or new.retention != old.retention:
        # the vault enforces retention: it learns the rules first, so a refusal leaves the local policy as it was
        reg = home.load()
        connect(home, reg).set_retention(MachineId(reg.machine_id), new.retention)
    policyfile.save(home, new)
    if new.schedule is not None and not home.schedule_state_file.exists():
        # scheduled times from now on are owed, also when the daemon starts later
        Scheduler(home.schedule_state_file, SystemClock(), lambda: new).due()
    if as_json:
        emit_json({"policy": msgspec.to_builtins(new), "points_kept_at_most": pf.points_kept(new)})
        return
    click.echo(_("Policy saved."))
    for line in describe(new):
        click.echo(line)


def _merge(current: tuple[str, ...], added: tuple[str, ...], removed: set[str]) -> tuple[str, ...]:
    out = [x for x in current if x not in removed]
    out += [x for x in added if x not in out]
    return tuple(out)
