"""`safehold agent run|install-service`: the daemon that runs the policy's schedule, and its systemd unit."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import click

from safehold.agent import policyfile
from safehold.agent.daemon import Daemon, DaemonLock
from safehold.agent.home import AgentHome
from safehold.agent.jobs import JobHistory
from safehold.agent.scheduler import Due, Scheduler
from safehold.cli.context import agent_home, connect
from safehold.cli.render import emit_json
from safehold.i18n import _
from safehold.model import MachineId
from safehold.ports import SystemClock

UNIT_NAME = "safehold-agent.service"


def _job_command(home: AgentHome) -> list[str]:
    return [sys.executable, "-m", "safehold.cli.main", "--home", str(home.root), "backup", "--scheduled", "--json"]


@click.group("agent")
def command() -> None:
    """The agent daemon: scheduled backups."""


@command.command("run")
@click.option("--once", is_flag=True, help="Run what is due now (a scheduled or missed backup), then exit.")
@click.option("--json", "as_json", is_flag=True, help="Log lines as JSON objects.")
@click.pass_obj
def run(obj: dict[str, str | None], once: bool, as_json: bool) -> None:
    """Run the backup schedule of the policy until stopped (SIGTERM or Ctrl-C).

    A scheduled time missed while the machine was off or the daemon stopped is made up once at start.
    Each backup runs as its own `safehold backup` process and appears in `safehold jobs` as scheduled.
    """
    home = agent_home(obj.get("home"))
    home.load()

    def log(text: str) -> None:
        if as_json:
            emit_json({"event": "daemon", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "message": text})
        else:
            click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}")

    def run_job(_due: Due) -> int:
        with open(home.root / "agent.log", "ab") as errlog:
            os.chmod(errlog.fileno(), 0o600)
            return subprocess.call(_job_command(home), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=errlog)

    def after_run() -> None:
        """A job process that died (killed, out of memory) cannot record that itself: the daemon does, and
        tells the vault."""
        reg = home.load()
        with JobHistory(reg.cache.jobs_db) as history:
            if history.reap():
                history.report(connect(home, reg), MachineId(reg.machine_id))

    scheduler = Scheduler(home.schedule_state_file, SystemClock(), lambda: policyfile.load(home))
    daemon = Daemon(scheduler, run_job, log, after_run)
    with DaemonLock(home.daemon_pid_file):
        if once:
            if daemon.once() is None:
                log("nothing is due")
            return

        def stop(_sig: int, _frame: FrameType | None) -> None:
            daemon.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        daemon.run()


def _quoted(word: str) -> str:
    """A word of a unit's command line: in double quotes, with systemd's specifiers (%) and quotes escaped."""
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def unit_text(home: AgentHome, user: bool) -> str:
    try:  # the daemon runs as the owner of the agent folder, so its files stay that user's
        uid = home.root.stat().st_uid
        owner = pwd.getpwuid(uid).pw_name if uid != 0 else None
    except (OSError, KeyError):
        owner = None
    return "\n".join([
        "[Unit]",
        "Description=safehold backup agent (scheduled backups)",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={_quoted(sys.executable)} -m safehold.cli.main --home {_quoted(str(home.root))} agent run",
        *([f"User={owner}"] if owner and not user else []),
        "Restart=on-failure",
        "RestartSec=30",
        # stopping the unit cancels a running backup cleanly: the job process gets SIGTERM too
        "KillMode=control-group",
        "TimeoutStopSec=120",
        "",
        "[Install]",
        f"WantedBy={'default.target' if user else 'multi-user.target'}",
        "",
    ])


@command.command("install-service")
@click.option("--unit-dir", type=click.Path(file_okay=False),
              help="Where to write the unit (default /etc/systemd/system, or ~/.config/systemd/user with --user).")
@click.option("--user", is_flag=True, help="A user unit (systemctl --user) instead of a system one.")
@click.option("--no-enable", is_flag=True, help="Only write the unit; do not enable or start it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def install_service(obj: dict[str, str | None], unit_dir: str | None, user: bool, no_enable: bool,
                    as_json: bool) -> None:
    """Write the systemd unit that runs `safehold agent run` at boot, and enable and start it."""
    home = agent_home(obj.get("home"))
    home.load()
    folder = Path(unit_dir) if unit_dir else (Path.home() / ".config/systemd/user" if user
                                              else Path("/etc/systemd/system"))
    folder.mkdir(parents=True, exist_ok=True)
    unit = folder / UNIT_NAME
    unit.write_text(unit_text(home, user))
    unit.chmod(0o644)
    enabled = False
    reason = None
    if no_enable:
        reason = "--no-enable"
    elif not shutil.which("systemctl") or not Path("/run/systemd/system").is_dir():
        reason = "systemd is not running on this machine"
    else:
        scope = ["--user"] if user else []
        for args in (["daemon-reload"], ["enable", "--now", UNIT_NAME]):
            done = subprocess.run(["systemctl", *scope, *args], capture_output=True, text=True)
            if done.returncode != 0:
                reason = done.stderr.strip() or f"systemctl {' '.join(args)} failed"
                break
        else:
            enabled = True
    if as_json:
        emit_json({"unit": str(unit), "enabled": enabled, "reason": reason})
        return
    click.echo(_("Wrote {unit}.").format(unit=unit))
    if enabled:
        click.echo(_("The agent daemon is enabled and running; see it with `systemctl status {name}`.").format(
            name=UNIT_NAME))
    else:
        click.echo(_("Not enabled ({reason}). Enable it with `systemctl enable --now {name}`.").format(
            reason=reason, name=UNIT_NAME))
