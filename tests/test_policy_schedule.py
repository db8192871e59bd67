"""The backup policy's rules and the scheduler's decisions, driven by an injected clock (no waiting)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.agent.daemon import Daemon
from safehold.agent.scheduler import Due, Scheduler
from safehold.agent.throttle import Limits, Pacer, parse_days, parse_rate
from safehold.errors import SafeholdError
from safehold.formats import policy as pf
from safehold.formats.policy import FileSpec, Policy, Retention, Schedule

from conftest import FakeClock

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def _policy(schedule: Schedule | None = None, **retention: object) -> Policy:
    return Policy(files=FileSpec(include=("/home",)), schedule=schedule or Schedule(),
                  retention=Retention(**retention))  # type: ignore[arg-type]


def _code(exc: pytest.ExceptionInfo[SafeholdError]) -> str:
    return exc.value.spec.code


@pytest.mark.parametrize(("field", "low", "high"), [
    ("daily_days", 7, 9999), ("weekly_weeks", 4, 5163), ("monthly_months", 3, 1188), ("yearly_years", 1, 99)])
def test_retention_ranges_are_the_mars_ranges(field: str, low: int, high: int) -> None:
    for ok in (low, high):
        pf.check(_policy(Schedule(times=("21:00",)), **{field: ok, "daily_days": None} if field != "daily_days"
                         else {field: ok}))
    for bad in (low - 1, high + 1):
        with pytest.raises(SafeholdError) as exc:
            pf.check(_policy(**{field: bad}))
        assert _code(exc) == "PolicyInvalid" and f"{bad:,}" in exc.value.text


def test_at_most_three_times_a_day_and_valid_times() -> None:
    pf.check(_policy(Schedule(times=("01:00", "09:30", "23:59"))))
    for times in (("01:00", "02:00", "03:00", "04:00"), ("24:00",), ("9:00",), ("10:00", "10:00"), ()):
        with pytest.raises(SafeholdError):
            pf.check(_policy(Schedule(times=times)))


def test_weekly_schedule_rules() -> None:
    weekly = Schedule(frequency="weekly", days=("wed", "sat"), times=("20:00",))
    pf.check(_policy(weekly, daily_days=None, weekly_weeks=10, weekly_days=("sat",)))
    with pytest.raises(SafeholdError, match="daily retention needs a daily schedule"):
        pf.check(_policy(weekly, daily_days=30, weekly_weeks=10))
    with pytest.raises(SafeholdError, match="days the schedule runs: sun"):
        pf.check(_policy(weekly, daily_days=None, weekly_weeks=10, weekly_days=("sun",)))
    with pytest.raises(SafeholdError, match="weekly schedule needs days"):
        pf.check(_policy(Schedule(frequency="weekly", times=("20:00",)), daily_days=None, weekly_weeks=4))


def test_at_most_9999_recovery_points() -> None:
    three = Schedule(times=("01:00", "09:00", "17:00"))
    pf.check(_policy(three, daily_days=3333))  # 9,999 exactly
    with pytest.raises(SafeholdError, match="up to 10,002 recovery points"):
        pf.check(_policy(three, daily_days=3334))


def test_anchors_and_zone_are_checked() -> None:
    pf.check(_policy(monthly_months=12, monthly_on="day-last", yearly_years=5, yearly_on="first-mon"))
    for anchor in ("day-29", "fifth-sat", "last-xyz", "saturday"):
        with pytest.raises(SafeholdError, match="anchor"):
            pf.check(_policy(monthly_months=12, monthly_on=anchor))
    with pytest.raises(SafeholdError, match="unknown time zone"):
        pf.check(_policy(timezone="Mars/Olympus"))


def test_a_damaged_policy_file_is_a_clear_error() -> None:
    with pytest.raises(SafeholdError) as exc:
        pf.decode(b'{"files": {"include": "not a list"}}')
    assert _code(exc) == "PolicyInvalid" and "cannot be read" in exc.value.text
    assert pf.decode(pf.encode(_policy())) == _policy()


def test_runs_across_daylight_saving_changes() -> None:
    s = Schedule(times=("02:30",))
    start = dt.datetime(2026, 3, 28, 12, tzinfo=STOCKHOLM)
    runs = list(pf.runs_between(s, start, start + dt.timedelta(days=3)))
    # 29 March 2026: 02:30 does not exist in Stockholm; that day's run is right after the gap
    assert [r.strftime("%m-%d %H:%M") for r in runs] == ["03-29 03:30", "03-30 02:30", "03-31 02:30"]
    autumn = dt.datetime(2026, 10, 24, 12, tzinfo=STOCKHOLM)
    runs = list(pf.runs_between(s, autumn, autumn + dt.timedelta(days=2)))
    assert len(runs) == 2, "a repeated wall time runs once"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(pf.WEEKDAYS), min_size=1, max_size=7, unique=True),
       st.lists(st.tuples(st.integers(0, 23), st.integers(0, 59)), min_size=1, max_size=3, unique=True),
       st.integers(0, 400 * 24 * 60))
def test_next_run_is_the_first_scheduled_moment(days: list[str], times: list[tuple[int, int]], minute: int) -> None:
    s = Schedule(frequency="weekly", days=tuple(days), times=tuple(sorted(f"{h:02}:{m:02}" for h, m in times)))
    after = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=minute, seconds=7)
    nxt = pf.next_run(s, after)
    assert nxt > after and pf.WEEKDAYS[nxt.weekday()] in days and f"{nxt:%H:%M}" in s.times
    assert list(pf.runs_between(s, after, nxt - dt.timedelta(seconds=1))) == []


class _Sched:
    def __init__(self, tmp_path: Path, policy: Policy | None) -> None:
        self.clock = FakeClock(int(dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC).timestamp()) * 10**9)
        self.policy = policy
        self.scheduler = Scheduler(tmp_path / "schedule.json", self.clock, lambda: self.policy, tz=dt.UTC)
        self.runs: list[Due] = []
        self.daemon = Daemon(self.scheduler, self._run, lambda _text: None)

    def _run(self, due: Due) -> int:
        self.runs.append(due)
        return 0

    def at(self, when: str) -> None:
        target = dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC)
        self.clock.ns = int(target.timestamp()) * 10**9


def test_scheduler_runs_on_time_and_once_per_time(tmp_path: Path) -> None:
    s = _Sched(tmp_path, _policy(Schedule(times=("09:00", "21:00"))))
    assert s.daemon.once() is None  # first start: nothing is owed
    s.at("2026-12-01 08:59")
    assert s.daemon.once() is None
    assert s.scheduler.wait_s() == 60.0  # looks again at least every minute
    s.at("2026-12-01 09:00")
    due = s.daemon.once()
    assert due is not None and not due.catch_up and due.missed == 1
    assert s.daemon.once() is None, "the same time never runs twice"
    s.at("2026-12-01 20:59:30")
    assert s.scheduler.wait_s() == 30.0
    s.at("2026-12-01 21:00:10")
    assert s.daemon.once() is not None
    assert [r.slot.strftime("%d %H:%M") for r in s.runs] == ["01 09:00", "01 21:00"]


def test_missed_runs_are_caught_up_once(tmp_path: Path) -> None:
    s = _Sched(tmp_path, _policy(Schedule(times=("09:00", "21:00"))))
    s.daemon.once()
    s.at("2026-12-04 12:00")  # the machine was off for three days: seven scheduled times passed
    due = s.daemon.once()
    assert due is not None and due.catch_up and due.missed == 7
    assert due.slot == dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.UTC)
    assert s.daemon.once() is None, "one catch-up run, not a burst"
    s.at("2026-12-04 21:00")
    assert s.daemon.once() is not None and len(s.runs) == 2


def test_no_schedule_or_no_policy_runs_nothing(tmp_path: Path) -> None:
    s = _Sched(tmp_path, None)
    s.daemon.once()
    s.at("2026-12-09 12:00")
    assert s.daemon.once() is None and s.scheduler.next_time() is None
    s.policy = Policy(files=FileSpec(include=("/home",)), schedule=None)
    assert s.daemon.once() is None


def test_a_crash_during_a_run_does_not_repeat_it(tmp_path: Path) -> None:
    s = _Sched(tmp_path, _policy(Schedule(times=("09:00",))))
    s.daemon.once()
    s.at("2026-12-01 09:00")

    def crash(_due: Due) -> int:
        raise RuntimeError("power cut")

    s.daemon.run_job = crash
    with pytest.raises(RuntimeError):
        s.daemon.once()
    s.daemon.run_job = s._run
    assert s.daemon.once() is None, "the time was marked handled before the run"


def test_throttle_rates_and_pacing() -> None:
    assert parse_rate("512Kbps") == 512_000 and parse_rate("1023Mbps") == 1_023_000_000
    for bad in ("100Kbps", "2Gbps", "fast", "10 MB/s"):
        with pytest.raises(SafeholdError):
            parse_rate(bad)
    assert parse_days("mon-wed,sat") == ("mon", "tue", "wed", "sat")
    limits = Limits(work_bps=1_000_000, other_bps=8_000_000, work_start_min=9 * 60, work_end_min=18 * 60,
                    work_days=("mon", "tue", "wed", "thu", "fri"))
    now = [dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC).timestamp()]  # a Wednesday, in work hours
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    pacer = Pacer(limits, clock=lambda: now[0], sleep=sleep, tz=dt.UTC)
    for _ in range(5):
        pacer.before_send(1_000_000)  # 8 Mbit each: 8 s apart at 1 Mbps
    assert slept == [8.0] * 4
    now[0] = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC).timestamp()  # Saturday: the other rate
    slept.clear()
    for _ in range(3):
        pacer.before_send(1_000_000)
    assert slept == [1.0, 1.0]


BERLIN = ZoneInfo("Europe/Berlin")


def _berlin(tmp_path: Path, times: tuple[str, ...], start: dt.datetime) -> tuple[FakeClock, Scheduler]:
    clock = FakeClock(int(start.timestamp()) * 10**9)
    p = _policy(Schedule(times=times))
    return clock, Scheduler(tmp_path / "schedule.json", clock, lambda: p, tz=BERLIN)


def _walk(clock: FakeClock, scheduler: Scheduler, hours: int) -> list[Due]:
    runs = []
    for _ in range(hours * 4):  # every 15 minutes
        clock.advance(900)
        due = scheduler.take()
        if due is not None:
            runs.append(due)
    return runs


def test_autumn_change_runs_each_time_once_and_on_time(tmp_path: Path) -> None:
    clock, s = _berlin(tmp_path, ("02:30", "21:00"), dt.datetime(2026, 10, 24, 12, tzinfo=BERLIN))
    assert s.take() is None
    runs = _walk(clock, s, 36)  # through 25 October, when 02:00-03:00 happens twice
    assert [f"{r.slot:%d %H:%M%z}" for r in runs] == ["24 21:00+0200", "25 02:30+0200", "25 21:00+0100"]
    assert not any(r.catch_up for r in runs)


def test_spring_change_runs_a_skipped_time_after_the_gap_once(tmp_path: Path) -> None:
    clock, s = _berlin(tmp_path, ("02:30", "03:30"), dt.datetime(2026, 3, 28, 12, tzinfo=BERLIN))
    s.take()
    runs = _walk(clock, s, 24)
    assert [f"{r.slot:%d %H:%M%z}" for r in runs] == ["29 03:30+0200"], "02:30 does not exist; it joins 03:30"


def test_weekly_days_take_ranges_and_exact_names(tmp_path: Path) -> None:
    from safehold.cli.cmd_policy import _days

    assert _days("mon-fri") == ("mon", "tue", "wed", "thu", "fri")
    assert _days("sat,wed") == ("wed", "sat")
    for bad in ("monkey", "saturnalia", "fri-mon", ""):
        with pytest.raises(SafeholdError):
            _days(bad)


class _RefusingVault:
    """Takes job reports, refusing those of one job as the vault refuses a malformed one."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.got: list[str] = []

    def report_jobs(self, _mid: str, jobs: list) -> None:
        from safehold.errors import raise_error

        if any(j.job_id == self.bad for j in jobs):
            raise_error("InvalidArgument", what="a job report with an unknown id, kind or trigger")
        self.got += [j.job_id for j in jobs]


def test_a_refused_job_report_does_not_block_the_others(tmp_path: Path) -> None:
    from safehold.agent.jobs import JobHistory
    from safehold.model import JobStatus

    with JobHistory(tmp_path / "jobs.sqlite") as h:
        ids = [h.start("backup") for _ in range(3)]
        for j in ids:
            h.finish(j, JobStatus.COMPLETED, error_text="x" * 10_000)
        vault = _RefusingVault(ids[1])
        assert h.report(vault, "m") == 3  # type: ignore[arg-type]
        assert vault.got == [ids[0], ids[2]] and h.unreported() == []
        assert len(h.get(ids[0]).error_text or "") == 2000
        assert h.report(vault, "m") == 0  # type: ignore[arg-type]


def test_reaping_never_overwrites_an_end_the_job_recorded(tmp_path: Path) -> None:
    import subprocess

    from safehold.agent.jobs import JobHistory
    from safehold.model import JobStatus

    gone = subprocess.run(["true"], check=True)
    assert gone.returncode == 0
    with JobHistory(tmp_path / "jobs.sqlite") as h:
        dead = h.start("backup", pid=999_999_999)
        done = h.start("backup", pid=999_999_998)
        h.finish(done, JobStatus.COMPLETED)
        h.finish(done, JobStatus.FAILED, only_running=True)  # what a late reaper would do
        assert [j.job_id for j in h.reap()] == [dead]
        assert h.get(done).status == JobStatus.COMPLETED
        assert h.get(dead).status == JobStatus.FAILED and "ended without finishing" in (h.get(dead).error_text or "")


def test_exclusions_by_path_match_below_a_symlinked_parent(tmp_path: Path) -> None:
    from safehold.agent.backupjob import request_from_policy

    real = tmp_path / "real"
    (real / "docs" / "sub").mkdir(parents=True)
    (real / "docs" / "tmp").mkdir()
    (tmp_path / "link").symlink_to(real)
    docs = str(tmp_path / "link" / "docs")
    p = Policy(files=FileSpec(include=(docs,), exclude=(f"{docs}/tmp", "*.bak"), non_recursive=(docs,)))
    req = request_from_policy(p, "manual")
    walked = str(real / "docs")  # the engine walks the included folder with its parents resolved
    assert f"{walked}/tmp" in req.excludes and "*.bak" in req.excludes
    assert f"{walked}/sub" in req.excludes, "the non-recursive folder's subfolders, as the walk sees them"
