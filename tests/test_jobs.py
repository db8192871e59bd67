"""Policies, job history, stopping jobs and the daemon, through the real `safehold` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safehold.agent.joblock import JobLock
from safehold.agent.jobs import JobHistory
from safehold.model import MachineId
from safehold.vault.service import VaultService

from conftest import Cli, restored

NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")


def _cache(cli: Cli) -> Path:
    return Path(json.loads((cli.home / "registration.json").read_text())["cache_folder"])


def _jobs(cli: Cli) -> list[dict]:
    return cli.ok("jobs", "--json").json_lines()


def _popen(cli: Cli, *args: str | os.PathLike[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "SAFEHOLD_HOME": str(cli.home)}
    return subprocess.Popen([sys.executable, "-m", "safehold.cli.main", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def _until(cond: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _slow_backup(cli: Cli, src: Path) -> subprocess.Popen[str]:
    """A backup that is still running when the test acts: uploads throttled to 512 Kbps, two packs."""
    src.mkdir(exist_ok=True)
    (src / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    cli.ok("settings", "--throttle-work", "512Kbps", "--throttle-other", "512Kbps")
    p = _popen(cli, "backup", src, "--json")
    assert p.stdout is not None
    line = p.stdout.readline()  # the first progress line: the job runs
    assert '"progress"' in line, (line, p.stderr.read() if p.stderr else "")
    return p


def test_policy_set_show_and_a_backup_that_follows_it(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "keep.txt").write_text("keep")
    (src / "DROP.TMP").write_text("file types match in any case")
    (src / "drop.tmp").write_text("excluded by type")
    (src / "sub" / "deep.txt").write_text("below a non-recursive folder")
    (src / "cache").mkdir()
    r = registered("backup", "--json")
    assert r.code == 2 and r.json_lines()[-1]["error"]["code"] == "PolicyNotSet"
    r = registered("policy", "set", "--include", src, "--exclude-type", ".tmp", "--non-recursive", src,
                   "--daily", "--at", "14:00", "--at", "02:00", "--keep-daily", "30", "--keep-monthly", "12",
                   "--monthly-on", "day-last", "--timezone", "Europe/Stockholm", "--json")
    assert r.code == 0, r.err
    doc = r.json_lines()[0]["policy"]
    assert doc["schedule"] == {"frequency": "daily", "times": ["02:00", "14:00"], "days": []}
    assert doc["retention"]["monthly_on"] == "day-last" and r.json_lines()[0]["points_kept_at_most"] == 72
    assert (registered.home / "policy.json").stat().st_mode & 0o777 == 0o600
    show = registered.ok("policy", "show").out
    assert "daily at 02:00, 14:00" in show and "monthly points (day-last) 12 months" in show
    assert "Next backup:" in show
    bad = registered("policy", "set", "--keep-weekly", "3")
    assert bad.code == 2 and "700601" in bad.err and "between 4 and 5,163" in bad.err
    assert registered.ok("policy", "show", "--json").json_lines()[0]["policy"] == doc, "a refused change keeps"
    vault = VaultService.open_folder(tmp_path / "vault")
    machine = MachineId(json.loads((registered.home / "registration.json").read_text())["machine_id"])
    rules = vault.retention(machine)
    assert rules is not None and rules.daily_days == 30 and rules.monthly_months == 12
    assert rules.monthly_on == "day-last" and rules.timezone == "Europe/Stockholm", "the vault enforces these"
    vault.close()
    assert registered("backup", "--keep-until", "2001-01-01").code == 2
    registered.ok("backup", "--keep-until", "2099-06-30")
    points = registered.ok("recovery-points", "--json").json_lines()[0]["recovery_points"]
    assert points[-1]["keep_until"].startswith("2099-06-30 23:59")
    target = tmp_path / "restore"
    registered.ok("restore", "latest", "--target", target)
    got = sorted(p.name for p in restored(target, src).iterdir())
    assert got == ["keep.txt"], "type exclusion (any case) and the non-recursive folder were applied"
    jobs = _jobs(registered)
    assert [(j["kind"], j["status"]) for j in jobs] == [("backup", "Completed"), ("restore", "Completed")]
    assert jobs[1]["files"] == 1 and jobs[1]["recovery_point"] == jobs[0]["recovery_point"]


def test_job_history_with_warnings_and_failed_files(registered: Cli, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop capabilities")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    (src / "secret.txt").write_text("secret")
    (src / "secret.txt").chmod(0)
    tmp_path.chmod(0o755)
    r = registered("backup", src, prefix=NO_DAC)
    assert r.code == 3
    registered.ok("backup", src)  # as full root: the file is read now
    jobs = _jobs(registered)
    assert [(j["kind"], j["trigger"], j["status"]) for j in jobs] == [
        ("backup", "manual", "CompletedWithWarnings"), ("backup", "manual", "Completed")]
    last = jobs[0]
    assert last["warnings"] == 1 and last["files"] == 1 and last["recovery_point"]
    assert last["ended_ns"] >= last["started_ns"]
    assert Path(last["failed_files_list"]).name == f"FailedFiles-{last['job_id']}.txt"
    shown = registered.ok("jobs", "show", last["job_id"][:8], "--failed-files").out
    assert "Completed with warnings" in shown and f"{src}/secret.txt\t0x80070005\t" in shown
    doc = registered.ok("jobs", "show", last["job_id"], "--failed-files", "--json").json_lines()[0]
    assert doc["failed_files"][0]["path"] == f"{src}/secret.txt" and doc["failed_files"][0]["id"] == "0x80070005"
    table = registered.ok("jobs").out.splitlines()
    assert table[0].split()[:3] == ["JOB", "TYPE", "TRIGGER"] and len(table) == 3
    missing = registered("jobs", "show", "ffffffff")
    assert missing.code == 2 and "700603" in missing.err


def test_a_second_job_is_refused_and_recorded(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    registered.ok("policy", "set", "--include", src, "--daily", "--at", "09:00")
    with JobLock(_cache(registered) / "job.lock", "restore held by the test"):
        r = registered("backup", src, "--json")
        assert r.code == 4 and r.json_lines()[-1]["error"]["id"] == "34528"
        (registered.home / "schedule.json").write_text(json.dumps({"last_slot_ns": (time.time_ns() - 3 * 86400 *
                                                                                    10**9)}))
        registered.ok("agent", "run", "--once")
    jobs = _jobs(registered)
    assert [(j["trigger"], j["status"], j["error_id"]) for j in jobs] == [
        ("manual", "Failed", "34528"), ("scheduled", "Failed", "34528")]
    table = registered.ok("vault", "jobs", tmp_path / "vault").out
    assert table.count("Failed") == 2 and "scheduled" in table
    assert "another job" in jobs[0]["error"]
    assert registered.ok("recovery-points", "--json").json_lines()[0]["recovery_points"] == []


def test_catch_up_run_after_the_machine_was_off(registered: Cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("scheduled data")
    registered.ok("policy", "set", "--include", src, "--daily", "--at", "03:00")
    nothing = registered.ok("agent", "run", "--once", "--json").json_lines()
    assert nothing[-1]["message"] == "nothing is due"
    (registered.home / "schedule.json").write_text(json.dumps({"last_slot_ns": time.time_ns() - 2 * 86400 * 10**9}))
    log = registered.ok("agent", "run", "--once", "--json").json_lines()
    assert log[0]["message"].startswith("catch-up run for") and "scheduled times missed" in log[0]["message"]
    assert log[1]["message"] == "backup finished with exit code 0"
    jobs = _jobs(registered)
    assert [(j["trigger"], j["status"]) for j in jobs] == [("scheduled", "Completed")]
    at_vault = [e for e in registered.ok("vault", "jobs", tmp_path / "vault", "--json").json_lines()
                if e["event"] == "job"]
    assert [(j["job_id"], j["trigger"], j["status"]) for j in at_vault] == [
        (jobs[0]["job_id"], "scheduled", "Completed")], "the job is reported to the vault"
    assert at_vault[0]["recovery_point"] == jobs[0]["recovery_point"]
    target = tmp_path / "restore"
    registered.ok("restore", jobs[0]["recovery_point"][:8], "--target", target)
    assert (restored(target, src) / "f").read_text() == "scheduled data"
    assert registered.ok("agent", "run", "--once", "--json").json_lines()[-1]["message"] == "nothing is due"


def test_jobs_stop_cancels_a_running_backup(registered: Cli, tmp_path: Path) -> None:
    settings = registered.ok("settings", "--throttle-work", "1Mbps", "--throttle-other", "2Mbps",
                             "--work-hours", "08:00-17:30", "--work-days", "mon-fri", "--json").json_lines()[0]
    assert settings["throttle"] == {"work_bps": 1_000_000, "other_bps": 2_000_000, "work_hours": "08:00-17:30",
                                    "work_days": ["mon", "tue", "wed", "thu", "fri"]}
    p = _slow_backup(registered, tmp_path / "src")
    running = [j for j in _jobs(registered) if j["status"] == "Running"]
    assert len(running) == 1 and running[0]["pid"] == p.pid
    r = registered("jobs", "stop", running[0]["job_id"][:8], "--json")
    assert r.code == 0, r.err
    assert r.json_lines()[0]["status"] == "Cancelled"
    out, _err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert json.loads(out.splitlines()[-1])["status"] == "Cancelled"
    assert registered.ok("recovery-points", "--json").json_lines()[0]["recovery_points"] == []
    again = registered("jobs", "stop", running[0]["job_id"][:8])
    assert again.code == 2 and "is not running" in again.err
    registered.ok("settings", "--no-throttle")
    assert registered.ok("settings").out.count("Throttling:   off") == 1
    registered.ok("backup", tmp_path / "src")


def test_a_job_whose_process_died_is_marked_failed(registered: Cli, tmp_path: Path) -> None:
    p = _slow_backup(registered, tmp_path / "src")
    p.kill()
    p.communicate(timeout=60)
    jobs = _jobs(registered)
    assert jobs[-1]["status"] == "Failed"
    assert jobs[-1]["error"] == f"the job's process (pid {p.pid}) ended without finishing the job"
    with JobHistory(_cache(registered) / "jobs.sqlite") as history:
        assert not [j for j in history.recent() if j.running]


def _finding(cli: Cli, check: str) -> dict:
    return next(f for f in cli("doctor", "--json").json_lines() if f.get("check") == check)


def test_the_daemon_runs_alone_and_stops_on_sigterm(registered: Cli, tmp_path: Path) -> None:
    registered.ok("policy", "set", "--include", tmp_path, "--no-schedule")
    assert _finding(registered, "schedule")["status"] == "skipped"
    registered.ok("policy", "set", "--daily", "--at", "23:59")
    missing = _finding(registered, "schedule")
    assert missing["status"] == "failed" and missing["error"]["id"] == "34610"
    d = _popen(registered, "agent", "run", "--json")
    pid_file = registered.home / "agent.pid"
    _until(lambda: pid_file.exists() and pid_file.read_text().strip() == str(d.pid), "the daemon's pid file")
    second = registered("agent", "run", "--once")
    assert second.code == 4 and "700604" in second.err and str(d.pid) in second.err
    assert _finding(registered, "daemon")["status"] == "ok"
    assert _finding(registered, "schedule")["status"] == "ok"
    d.send_signal(signal.SIGTERM)
    out, _err = d.communicate(timeout=60)
    assert d.returncode == 0
    messages = [json.loads(line)["message"] for line in out.splitlines()]
    assert messages[0].startswith("agent daemon started") and messages[-1] == "agent daemon stopped"
    assert pid_file.read_text() == "", "emptied, not removed: the lock file stays"
    assert _finding(registered, "daemon")["status"] == "failed"


def test_install_service_writes_a_unit(registered: Cli, tmp_path: Path) -> None:
    r = registered.ok("agent", "install-service", "--unit-dir", tmp_path / "units", "--no-enable", "--json")
    doc = r.json_lines()[0]
    assert doc["enabled"] is False and doc["reason"] == "--no-enable"
    unit = (tmp_path / "units" / "safehold-agent.service").read_text()
    assert f'--home "{registered.home}" agent run' in unit and "WantedBy=multi-user.target" in unit
    assert "Restart=on-failure" in unit


def test_tables_line_up_by_display_width() -> None:
    from safehold.cli.render import table, width

    lines = table([("作业", "状态", "N"), ("c7c6adeb", "ok", "12")], right=frozenset({2}))
    assert lines == ["作业      状态   N", "c7c6adeb  ok    12"]
    assert width(lines[0][:lines[0].index("状态")]) == lines[1].index("ok")
