"""Backup policies: what to back up (file spec), when (schedule) and how long the vault keeps it (retention).

Pure values with their validation, their JSON form and the schedule's arithmetic; no I/O. Which recovery
points a retention keeps is decided in `formats.retention`; the agent stores the policy, the vault enforces
its retention part.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from safehold.errors import raise_error

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
ORDINALS = ("first", "second", "third", "fourth", "last")

MAX_TIMES_PER_DAY = 3
# The MARS ranges for each kind of retention, and the most recovery points one machine may keep.
DAILY_DAYS = (7, 9999)
WEEKLY_WEEKS = (4, 5163)
MONTHLY_MONTHS = (3, 1188)
YEARLY_YEARS = (1, 99)
MAX_RECOVERY_POINTS = 9999

DAILY = "daily"
WEEKLY = "weekly"

_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DAY_ANCHOR = re.compile(r"^day-(\d{1,2}|last)$")
_WEEK_ANCHOR = re.compile(r"^(first|second|third|fourth|last)-(mon|tue|wed|thu|fri|sat|sun)$")


class FileSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Absolute paths to back up, and what to leave out of them."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # absolute paths, or glob patterns matched against names and full paths
    exclude_types: tuple[str, ...] = ()  # file name extensions such as ".tmp", matched without case
    non_recursive: tuple[str, ...] = ()  # included folders whose files are kept but not their subfolders


class Schedule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When backups run, in the machine's local time zone: daily, or weekly on chosen days; 1-3 times a day."""

    frequency: str = DAILY
    times: tuple[str, ...] = ("21:00",)  # HH:MM, sorted
    days: tuple[str, ...] = ()  # weekly only: mon..sun


class Retention(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How long the vault keeps recovery points. Each kind is off when its count is None.

    Anchors: `monthly_on` and `yearly_on` are "day-N" (1-28), "day-last", or an ordinal and a weekday
    ("first".."fourth", "last"; "last-sat"); `yearly_month` is jan..dec; `weekly_days` are the weekdays whose
    backup counts as weekly.
    """

    daily_days: int | None = 30
    weekly_weeks: int | None = None
    weekly_days: tuple[str, ...] = ("sat",)
    monthly_months: int | None = None
    monthly_on: str = "last-sat"
    yearly_years: int | None = None
    yearly_month: str = "dec"
    yearly_on: str = "last-sat"
    timezone: str = "UTC"  # the zone the anchors are read in: the machine's, sent along with the rules


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    files: FileSpec = FileSpec()
    schedule: Schedule | None = Schedule()  # None: no scheduled backups (on demand only)
    retention: Retention = Retention()


def _bad(what: str) -> None:
    raise_error("PolicyInvalid", reason=what)


def _check_range(name: str, value: int | None, bounds: tuple[int, int]) -> None:
    if value is not None and not bounds[0] <= value <= bounds[1]:
        _bad(f"{name} must be between {bounds[0]:,} and {bounds[1]:,}, not {value:,}")


def check_anchor(name: str, anchor: str) -> None:
    m = _DAY_ANCHOR.match(anchor)
    if m:
        if m.group(1) != "last" and not 1 <= int(m.group(1)) <= 28:
            _bad(f"{name} day must be 1-28 or last, not {m.group(1)}")
        return
    if not _WEEK_ANCHOR.match(anchor):
        _bad(f"{name} must be day-N (1-28), day-last or an ordinal and a weekday such as last-sat, not {anchor!r}")


def check_zone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        _bad(f"unknown time zone {name!r}")


def check_retention(r: Retention) -> None:
    _check_range("daily retention (days)", r.daily_days, DAILY_DAYS)
    _check_range("weekly retention (weeks)", r.weekly_weeks, WEEKLY_WEEKS)
    _check_range("monthly retention (months)", r.monthly_months, MONTHLY_MONTHS)
    _check_range("yearly retention (years)", r.yearly_years, YEARLY_YEARS)
    if not r.weekly_days or any(d not in WEEKDAYS for d in r.weekly_days):
        _bad("weekly retention days must be among " + ",".join(WEEKDAYS))
    check_anchor("monthly retention anchor", r.monthly_on)
    check_anchor("yearly retention anchor", r.yearly_on)
    if r.yearly_month not in MONTHS:
        _bad("yearly retention month must be one of " + ",".join(MONTHS))
    if all(v is None for v in (r.daily_days, r.weekly_weeks, r.monthly_months, r.yearly_years)):
        _bad("at least one kind of retention (daily, weekly, monthly or yearly) is needed")
    check_zone(r.timezone)


def check_schedule(s: Schedule) -> None:
    if s.frequency not in (DAILY, WEEKLY):
        _bad(f"schedule must be daily or weekly, not {s.frequency!r}")
    if not 1 <= len(s.times) <= MAX_TIMES_PER_DAY:
        _bad(f"a schedule runs 1 to {MAX_TIMES_PER_DAY} times a day, not {len(s.times)}")
    for t in s.times:
        if not _TIME.match(t):
            _bad(f"time {t!r} is not HH:MM (00:00-23:59)")
    if len(set(s.times)) != len(s.times):
        _bad("the same time is given twice")
    if s.frequency == WEEKLY:
        if not s.days or any(d not in WEEKDAYS for d in s.days):
            _bad("a weekly schedule needs days among " + ",".join(WEEKDAYS))
    elif s.days:
        _bad("days are for a weekly schedule; a daily schedule runs every day")


def _check_paths(name: str, paths: tuple[str, ...]) -> None:
    for p in paths:
        if not p.startswith("/") or "\0" in p:
            _bad(f"{name} {p!r} is not an absolute path")


def check_files(f: FileSpec) -> None:
    if not f.include:
        _bad("the policy includes no folder or file (--include)")
    _check_paths("included path", f.include)
    _check_paths("non-recursive folder", f.non_recursive)
    for p in f.non_recursive:
        if p not in f.include:
            _bad(f"non-recursive folder {p!r} must also be included")
    for pattern in f.exclude:
        if not pattern or "\0" in pattern:
            _bad("an empty exclusion")
    for ext in f.exclude_types:
        if not re.fullmatch(r"\.[^/\s.][^/\s]*", ext):
            _bad(f"file type {ext!r} must look like .tmp")


def points_kept(p: Policy) -> int:
    """The most recovery points this policy can keep at once (the MARS count, before on-demand points)."""
    r = p.retention
    per_day = len(p.schedule.times) if p.schedule else 1
    total = 0
    if r.daily_days:
        total += r.daily_days * per_day
    if r.weekly_weeks:
        total += r.weekly_weeks * len(r.weekly_days)
    total += (r.monthly_months or 0) + (r.yearly_years or 0)
    return total


def check(p: Policy) -> Policy:
    """Validate a whole policy; returns it unchanged or raises PolicyInvalid naming the first problem."""
    check_files(p.files)
    check_retention(p.retention)
    if p.schedule is not None:
        check_schedule(p.schedule)
        if p.schedule.frequency == WEEKLY:
            if p.retention.daily_days is not None:
                _bad("daily retention needs a daily schedule; keep weekly points instead (--keep-weekly)")
            missing = [d for d in p.retention.weekly_days if d not in p.schedule.days]
            if p.retention.weekly_weeks is not None and missing:
                _bad("weekly retention days must be days the schedule runs: " + ",".join(missing))
    total = points_kept(p)
    if total > MAX_RECOVERY_POINTS:
        _bad(f"the policy would keep up to {total:,} recovery points; at most {MAX_RECOVERY_POINTS:,} are allowed")
    return p


def encode(p: Policy) -> bytes:
    return msgspec.json.encode(p)


def decode(data: bytes) -> Policy:
    """Parse and validate a stored policy; a damaged file is PolicyInvalid with the parser's reason."""
    try:
        p = msgspec.json.decode(data, type=Policy)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise_error("PolicyInvalid", reason=f"the stored policy cannot be read: {exc}")
    return check(p)


def _times(s: Schedule) -> list[dt.time]:
    return sorted(dt.time(int(t[:2]), int(t[3:])) for t in s.times)


def runs_between(s: Schedule, start: dt.datetime, end: dt.datetime) -> Iterator[dt.datetime]:
    """The scheduled moments in (start, end], in start's time zone, oldest first.

    Wall-clock times that a daylight-saving change skips run at the first moment after the gap; times the
    change repeats run once (the first occurrence).
    """
    tz = start.tzinfo
    if tz is None or end.tzinfo is None:
        raise ValueError("aware datetimes needed")
    # Compared as instants: datetimes sharing a tzinfo compare by wall time, which is wrong across a change.
    lo, hi = start.timestamp(), end.timestamp()
    seen: set[float] = set()
    day = start.astimezone(tz).date() - dt.timedelta(days=1)
    last_day = end.astimezone(tz).date() + dt.timedelta(days=1)
    while day <= last_day:
        if s.frequency == DAILY or WEEKDAYS[day.weekday()] in s.days:
            for t in _times(s):
                when = _local(day, t, tz)
                instant = when.timestamp()
                if lo < instant <= hi and instant not in seen:  # two times in a skipped hour run once
                    seen.add(instant)
                    yield when
        day += dt.timedelta(days=1)


def next_run(s: Schedule, after: dt.datetime) -> dt.datetime:
    """The first scheduled moment strictly after `after` (at most eight days ahead)."""
    for when in runs_between(s, after, after + dt.timedelta(days=8)):
        return when
    raise ValueError("a valid schedule runs at least once a week")


def _local(day: dt.date, t: dt.time, tz: dt.tzinfo) -> dt.datetime:
    naive = dt.datetime.combine(day, t)
    when = naive.replace(tzinfo=tz, fold=0)
    # A wall time inside a spring-forward gap does not survive a round trip through UTC: move past the gap.
    back = when.astimezone(dt.UTC).astimezone(tz)
    if back.replace(tzinfo=None) != naive:
        return back
    return when


def zone(name: str) -> ZoneInfo:
    check_zone(name)
    return ZoneInfo(name)
