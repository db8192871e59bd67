"""Which recovery points a retention keeps: the vault's expiry decision, as a pure function (docs/retention.md).

Only the selection: it reads no catalog and deletes nothing; `vault/housekeeping.py` applies it.
"""

from __future__ import annotations

import bisect
import calendar
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from safehold.formats.policy import MONTHS, ORDINALS, WEEKDAYS, Retention

DAILY = "daily"
WEEKLY = "weekly"
MONTHLY = "monthly"
YEARLY = "yearly"
KEEP_UNTIL = "keep-until"
SAFETY_NET = "safety-net"

DAY_NS = 86_400 * 10**9
# A machine whose newest good point is older than this is failing: expiry stops where it stood then.
# A week and a day, so that one missed weekly backup already counts.
FAILING_AFTER_NS = 8 * DAY_NS
GOOD = frozenset({"Completed", "CompletedWithWarnings"})


@dataclass(frozen=True)
class Point:
    rp_id: str
    created_ns: int
    status: str  # a JobStatus value; only Completed and CompletedWithWarnings are good
    keep_until_ns: int | None = None


def keep(rules: Retention, points: Iterable[Point], now_ns: int) -> dict[str, tuple[str, ...]]:
    """The points to keep at `now_ns`, each with the reasons it is kept; every other point expires.

    Rules: docs/retention.md. In short: the rules are applied at `now_ns`; when the newest good point is older
    than FAILING_AFTER_NS they are also applied at the moment the machine started failing, and what that keeps
    stays (safety net); the newest good point is always kept; a point with keep_until stays until then.
    """
    pts = sorted(points, key=lambda p: (p.created_ns, p.rp_id))
    reasons: dict[str, list[str]] = {}
    for rp_id, why in _by_rules(rules, pts, now_ns):
        reasons.setdefault(rp_id, []).append(why)
    for p in pts:
        if p.keep_until_ns is not None and p.keep_until_ns > now_ns:
            reasons.setdefault(p.rp_id, []).append(KEEP_UNTIL)
    good = [p for p in pts if p.status in GOOD]
    if good:
        newest = good[-1]
        net = {newest.rp_id}
        frozen_at = newest.created_ns + FAILING_AFTER_NS
        if frozen_at < now_ns:
            net.update(rp_id for rp_id, _ in _by_rules(rules, pts, frozen_at))
        for rp_id in net:
            if rp_id not in reasons:
                reasons[rp_id] = [SAFETY_NET]
    return {rp_id: tuple(dict.fromkeys(why)) for rp_id, why in reasons.items()}


def _by_rules(rules: Retention, pts: list[Point], at_ns: int) -> Iterator[tuple[str, str]]:
    """(point, reason) for every point the counted rules keep at `at_ns`; points after `at_ns` are ignored."""
    tz = ZoneInfo(rules.timezone)
    pts = [p for p in pts if p.created_ns <= at_ns]
    day_of = {p.rp_id: _local_date(p.created_ns, tz) for p in pts}
    today = _local_date(at_ns, tz)
    if rules.daily_days:
        first = today - dt.timedelta(days=rules.daily_days - 1)
        for p in pts:
            if day_of[p.rp_id] >= first:
                yield p.rp_id, DAILY
    good = [p for p in pts if p.status in GOOD]
    anchored: list[tuple[str, list[dt.date]]] = []
    if rules.weekly_weeks:
        days = {WEEKDAYS.index(d) for d in rules.weekly_days}
        anchored.append((WEEKLY, _latest(rules.weekly_weeks * len(days),
                                         (d for d in _days_back(today) if d.weekday() in days))))
    if rules.monthly_months:
        anchored.append((MONTHLY, _latest(rules.monthly_months, (
            d for d in (_anchor(y, m, rules.monthly_on) for y, m in _months_back(today)) if d <= today))))
    if rules.yearly_years:
        month = MONTHS.index(rules.yearly_month) + 1
        anchored.append((YEARLY, _latest(rules.yearly_years, (
            d for d in (_anchor(y, month, rules.yearly_on) for y in range(today.year, 0, -1)) if d <= today))))
    good_days = [day_of[p.rp_id] for p in good]
    for why, dates in anchored:
        for d in dates:
            # The newest good point taken on d; when there is none (that backup failed or did not run), the
            # first good point after d.
            i = bisect.bisect_right(good_days, d)
            if i and good_days[i - 1] == d:
                yield good[i - 1].rp_id, why
            elif i < len(good):
                yield good[i].rp_id, why


def _latest(n: int, dates: Iterator[dt.date]) -> list[dt.date]:
    """The first `n` dates (newest first); a count of thousands of weeks costs no more than the calendar."""
    out: list[dt.date] = []
    for d in dates:
        if len(out) == n:
            break
        out.append(d)
    return out


def _local_date(ns: int, tz: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(ns // 10**9, tz).date()


def _days_back(today: dt.date) -> Iterator[dt.date]:
    d = today
    while d > dt.date.min:
        yield d
        d -= dt.timedelta(days=1)


def _months_back(today: dt.date) -> Iterator[tuple[int, int]]:
    y, m = today.year, today.month
    while y >= 1:
        yield y, m
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)


def _anchor(year: int, month: int, spec: str) -> dt.date:
    """The date an anchor names in a month: day-N, day-last, or first..fourth/last weekday."""
    last = calendar.monthrange(year, month)[1]
    if spec.startswith("day-"):
        n = spec.removeprefix("day-")
        return dt.date(year, month, last if n == "last" else int(n))
    ordinal, day = spec.split("-")
    weekday = WEEKDAYS.index(day)
    if ordinal == "last":
        d = dt.date(year, month, last)
        return d - dt.timedelta(days=(d.weekday() - weekday) % 7)
    first = dt.date(year, month, 1)
    first += dt.timedelta(days=(weekday - first.weekday()) % 7)
    return first + dt.timedelta(weeks=ORDINALS.index(ordinal))
