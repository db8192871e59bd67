"""Which recovery points a retention keeps (formats/retention.py): calendar rules, failed backups, keep-until,
the safety net for machines whose backups fail, and properties that hold for any history."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.formats.policy import Retention
from safehold.formats.retention import (
    DAILY,
    FAILING_AFTER_NS,
    KEEP_UNTIL,
    MONTHLY,
    SAFETY_NET,
    WEEKLY,
    YEARLY,
    Point,
    keep,
)

TZ = "Europe/Stockholm"
DAY = 86_400 * 10**9


def at(y: int, m: int, d: int, hour: int = 21, tz: str = TZ) -> int:
    return int(dt.datetime(y, m, d, hour, tzinfo=ZoneInfo(tz)).timestamp()) * 10**9


def nightly(first: dt.date, last: dt.date, failed: frozenset[dt.date] = frozenset()) -> list[Point]:
    out = []
    d = first
    while d <= last:
        out.append(Point(d.isoformat(), at(d.year, d.month, d.day), "Failed" if d in failed else "Completed"))
        d += dt.timedelta(days=1)
    return out


def test_daily_keeps_every_point_of_the_last_n_days() -> None:
    pts = nightly(dt.date(2026, 1, 1), dt.date(2026, 3, 1))
    kept = keep(Retention(daily_days=7, timezone=TZ), pts, at(2026, 3, 1, 23))
    assert sorted(kept) == [f"2026-02-{d}" for d in range(23, 29)] + ["2026-03-01"]
    assert all(why == (DAILY,) for why in kept.values())


def test_weekly_keeps_the_saturday_and_the_next_good_point_when_saturday_failed() -> None:
    # 2026-02-21 is a Saturday whose backup failed: Sunday's point is that week's long-term point.
    pts = nightly(dt.date(2026, 1, 1), dt.date(2026, 3, 4), failed=frozenset({dt.date(2026, 2, 21)}))
    kept = keep(Retention(daily_days=None, weekly_weeks=4, weekly_days=("sat",), timezone=TZ), pts,
                at(2026, 3, 4, 23))
    assert sorted(kept) == ["2026-02-07", "2026-02-14", "2026-02-22", "2026-02-28", "2026-03-04"]
    assert kept["2026-02-22"] == (WEEKLY,)
    assert kept["2026-03-04"] == (SAFETY_NET,)  # the newest good point, kept by no rule


def test_monthly_and_yearly_anchors_in_the_rules_time_zone() -> None:
    # Last Saturday of each month at 21:00 Stockholm time is still that Saturday there, Sunday nowhere.
    pts = nightly(dt.date(2023, 11, 1), dt.date(2026, 3, 4))
    rules = Retention(daily_days=None, monthly_months=3, monthly_on="last-sat", yearly_years=2,
                      yearly_month="dec", yearly_on="day-last", timezone=TZ)
    kept = keep(rules, pts, at(2026, 3, 4, 23))
    assert {k for k, why in kept.items() if MONTHLY in why} == {"2025-12-27", "2026-01-31", "2026-02-28"}
    assert {k for k, why in kept.items() if YEARLY in why} == {"2024-12-31", "2025-12-31"}
    # The same moments read in Tokyo fall on the next morning: 21:00 Stockholm is 05:00 the day after there.
    tokyo = keep(Retention(daily_days=None, monthly_months=1, monthly_on="day-1", timezone="Asia/Tokyo"), pts,
                 at(2026, 3, 4, 23))
    assert {k for k, why in tokyo.items() if MONTHLY in why} == {"2026-02-28"}


def test_ordinal_weekday_anchor() -> None:
    pts = nightly(dt.date(2026, 1, 1), dt.date(2026, 3, 20))
    kept = keep(Retention(daily_days=None, monthly_months=3, monthly_on="second-tue", timezone=TZ), pts,
                at(2026, 3, 20))
    assert {k for k, why in kept.items() if MONTHLY in why} == {"2026-01-13", "2026-02-10", "2026-03-10"}


def test_failed_points_never_serve_as_the_long_term_point() -> None:
    pts = [Point("fail", at(2026, 2, 28), "Failed"), Point("cancel", at(2026, 2, 28, 22), "Cancelled"),
           Point("next", at(2026, 3, 2), "Completed"), Point("new", at(2026, 3, 5), "Completed")]
    kept = keep(Retention(daily_days=None, weekly_weeks=4, timezone=TZ), pts, at(2026, 3, 5, 23))
    assert kept == {"next": (WEEKLY,), "new": (SAFETY_NET,)}


def test_on_demand_point_stays_until_its_date() -> None:
    pts = nightly(dt.date(2026, 1, 1), dt.date(2026, 3, 1))
    pts.append(Point("on-demand", at(2026, 1, 5, 12), "Completed", keep_until_ns=at(2026, 6, 1)))
    rules = Retention(daily_days=7, timezone=TZ)
    assert keep(rules, pts, at(2026, 3, 1, 23))["on-demand"] == (KEEP_UNTIL,)
    assert "on-demand" not in keep(rules, pts, at(2026, 6, 2))


def test_safety_net_keeps_what_the_machine_had_when_its_backups_started_failing() -> None:
    pts = nightly(dt.date(2026, 1, 1), dt.date(2026, 3, 1))
    rules = Retention(daily_days=7, weekly_weeks=4, timezone=TZ)
    while_healthy = keep(rules, pts, at(2026, 3, 1, 23))
    # Backups fail from March 2 on: a year later the vault has expired nothing that it kept a week and a day
    # after the last good backup, and the newest good point is among it.
    stalled_at = at(2026, 3, 1) + FAILING_AFTER_NS
    expected = set(keep(rules, pts, stalled_at))
    later = keep(rules, [*pts, Point("failed", at(2026, 3, 2), "Failed")], at(2027, 3, 1))
    assert set(later) == expected and "2026-03-01" in later
    assert all(why == (SAFETY_NET,) for why in later.values())
    assert expected <= set(while_healthy)  # the net holds what the rules kept, it adds nothing new


# ---- properties -----------------------------------------------------------------------------------------------

T0 = at(2020, 1, 1)
STATUSES = st.sampled_from(["Completed", "CompletedWithWarnings", "Failed", "Cancelled"])


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Point], int]:
    offsets = draw(st.lists(st.integers(0, 3 * 365 * DAY), max_size=40, unique=True))
    pts = [Point(f"p{i}", T0 + off, draw(STATUSES),
                 draw(st.one_of(st.none(), st.integers(T0, T0 + 4 * 365 * DAY)))) for i, off in enumerate(offsets)]
    now = T0 + draw(st.integers(max(offsets, default=0), 4 * 365 * DAY))
    return pts, now


@st.composite
def rules(draw: st.DrawFn) -> Retention:
    return Retention(
        daily_days=draw(st.one_of(st.none(), st.integers(7, 60))),
        weekly_weeks=draw(st.one_of(st.none(), st.integers(4, 60))),
        weekly_days=tuple(draw(st.lists(st.sampled_from(["mon", "wed", "sat", "sun"]), min_size=1, max_size=3,
                                        unique=True))),
        monthly_months=draw(st.one_of(st.none(), st.integers(3, 24))),
        monthly_on=draw(st.sampled_from(["day-1", "day-15", "day-last", "first-mon", "last-sat"])),
        yearly_years=draw(st.one_of(st.none(), st.integers(1, 5))),
        yearly_month=draw(st.sampled_from(["jan", "jun", "dec"])),
        yearly_on=draw(st.sampled_from(["day-last", "last-sat", "fourth-fri"])),
        timezone=draw(st.sampled_from(["UTC", TZ, "America/New_York", "Asia/Kolkata"])))


def _good(pts: list[Point]) -> list[Point]:
    return sorted((p for p in pts if p.status in ("Completed", "CompletedWithWarnings")),
                  key=lambda p: (p.created_ns, p.rp_id))


@settings(max_examples=150, deadline=None)
@given(rules(), histories())
def test_the_newest_good_point_is_always_kept(r: Retention, h: tuple[list[Point], int]) -> None:
    pts, now = h
    kept = keep(r, pts, now)
    good = _good(pts)
    if good:
        assert good[-1].rp_id in kept
    assert set(kept) <= {p.rp_id for p in pts}


@settings(max_examples=150, deadline=None)
@given(rules(), histories(), st.data())
def test_more_of_any_count_keeps_at_least_as_much(r: Retention, h: tuple[list[Point], int],
                                                  data: st.DataObject) -> None:
    pts, now = h
    field = data.draw(st.sampled_from(["daily_days", "weekly_weeks", "monthly_months", "yearly_years"]))
    extra = data.draw(st.integers(1, 30))
    bigger = Retention(**{**{f: getattr(r, f) for f in r.__struct_fields__},
                          field: (getattr(r, field) or 0) + extra if getattr(r, field) else getattr(r, field)})
    assert set(keep(r, pts, now)) <= set(keep(bigger, pts, now))


@settings(max_examples=150, deadline=None)
@given(rules(), histories(), st.integers(0, 20 * 3600))
def test_a_new_backup_never_expires_an_older_point_its_rules_keep(r: Retention, h: tuple[list[Point], int],
                                                                  before_now_s: int) -> None:
    """A new good point (the newest, taken within the last day) only ever displaces points of its own day: the
    earlier point of that day under an anchored rule. Points kept by a rule or keep-until stay."""
    pts, now = h
    created = max([now - before_now_s * 10**9, *(p.created_ns + 1 for p in pts)])
    if created > now:
        return
    q = Point("new", created, "Completed")
    tz = ZoneInfo(r.timezone)
    q_day = dt.datetime.fromtimestamp(created // 10**9, tz).date()
    before = keep(r, pts, now)
    after = keep(r, [*pts, q], now)
    assert "new" in after
    for p in pts:
        why = before.get(p.rp_id, ())
        same_day = dt.datetime.fromtimestamp(p.created_ns // 10**9, tz).date() == q_day
        if why and why != (SAFETY_NET,) and not same_day:
            assert p.rp_id in after, (p, why)
