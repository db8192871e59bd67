"""`safehold mount` and `safehold unmount`: recovery points as a read-only file system (Instant Restore).

The mount is served by a process of its own (in the background unless --foreground) that unmounts itself
after an idle timeout; HOME/mounts/ records it so that `unmount` finds it.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from safehold.agent import mounts
from safehold.agent.backup import open_meta
from safehold.agent.home import AgentHome
from safehold.agent.joblock import JobLock
from safehold.agent.jobs import JobHistory
from safehold.agent.mountfs import MountFS, folder_name
from safehold.agent.reader import ChunkReader
from safehold.cli.context import Agent, agent_home, connect, load_agent, pick_rp
from safehold.cli.render import emit_json
from safehold.errors import SafeholdError, raise_error
from safehold.formats.chunks import Sealer
from safehold.i18n import _
from safehold.model import JobStatus, RecoveryPoint
from safehold.ports import SystemClock

READY_TIMEOUT_S = 60.0
UNMOUNT_WAIT_S = 15.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float | None:
    """Seconds of `90s`, `30m`, `6h`, `1d` or a plain number of seconds; None for `0`, `off` or `never`."""
    value = text.strip().lower()
    if value in ("0", "off", "never", "none"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", value)
    if m is None or float(m.group(1)) <= 0:
        raise_error("InvalidArgument", what=f"--idle-timeout {text}: give a duration such as 90s, 30m, 6h or off")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _points(agent: Agent, ref: str | None) -> list[RecoveryPoint]:
    """The recovery points to show, each checked to be the one its machine sealed; with --all a point whose
    metadata fails the check is left out (and said so) rather than failing the mount."""
    rps = agent.vault.recovery_points(agent.machine_id)
    sealer = Sealer(agent.keys)
    if ref is not None:
        rp = pick_rp(rps, ref)
        open_meta(sealer, rp)
        return [rp]
    good = []
    for rp in rps:
        try:
            open_meta(sealer, rp)
        except SafeholdError as exc:
            click.echo(_("warning: recovery point {rp} is left out: {reason}").format(rp=rp.rp_id[:8],
                                                                                     reason=exc.text), err=True)
            continue
        good.append(rp)
    return good


def _log(text: str) -> None:
    """The mount's own log: stderr, which is the log file in the background and the terminal in the foreground."""
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
    sys.stderr.flush()


def _serve(agent: Agent, points: list[RecoveryPoint], single: bool, mountpoint: str, timeout_s: float | None,
           allow_other: bool, log_file: Path | None, on_ready: Callable[[], None]) -> None:
    """Open the vault anew (this may be a forked process), build the file system, serve until unmounted."""
    from safehold.agent import fuse_adapter  # noqa: PLC0415 - loads libfuse3; only the mount needs it

    vault = connect(agent.home, agent.reg)
    reader = ChunkReader(vault, agent.machine_id, Sealer(agent.keys))
    sealer = Sealer(agent.keys)

    def refresh() -> list[RecoveryPoint]:
        fresh = []
        for rp in vault.recovery_points(agent.machine_id):
            try:
                open_meta(sealer, rp)
            except SafeholdError:
                continue
            fresh.append(rp)
        return fresh

    log = _log
    fs = MountFS(reader, points, single, SystemClock(), None if timeout_s is None else int(timeout_s * 1e9),
                 refresh=None if single else refresh, log=log)
    record = mounts.MountRecord(mountpoint, os.getpid(), points[0].rp_id if single else "all", time.time_ns(),
                                timeout_s, str(log_file or ""))

    job: list[str] = []

    def ready() -> None:  # called on libfuse's thread: it opens its own history connection
        mounts.save(agent.home, record)
        # a mount is a job in the history while it lasts: `safehold jobs stop` unmounts it (SIGTERM)
        with JobHistory(agent.cache.jobs_db) as history:
            job.append(history.start("mount"))
        log(f"mounted {record.recovery_point} at {mountpoint}")
        on_ready()

    try:
        fuse_adapter.serve(fs, mountpoint, ready, allow_other=allow_other)
    finally:
        fs.close()
        mounts.remove(agent.home, mountpoint, pid=os.getpid())
        if job:
            with JobHistory(agent.cache.jobs_db) as history:
                history.finish(job[0], JobStatus.COMPLETED, recovery_point=points[0].rp_id if single else None)
                history.report(vault, agent.machine_id)
        log(f"unmounted {mountpoint}")


def _close_vault(agent: Agent) -> None:
    """The serving process opens its own vault connections; none is shared across fork."""
    close = getattr(agent.vault, "close", None)
    if callable(close):
        close()


def _background(run: Callable[[Callable[[], None]], None], mountpoint: str, log_file: Path) -> int:
    """Fork the serving process; return its pid once the mount is ready, or raise MountFailed."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the serving process: its own session, output to the log
        code, told = 0, []

        def ready() -> None:
            os.write(w, b"ok\n")
            os.close(w)
            told.append(True)

        try:
            os.close(r)
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(null, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            run(ready)
        except BaseException as exc:  # told to the waiting parent, then this process ends
            code = 1
            with contextlib.suppress(OSError):
                sys.stderr.write(f"mount failed: {exc!r}\n")
                sys.stderr.flush()
                if not told:
                    os.write(w, f"error {exc}\n".encode(errors="replace"))
        finally:
            os._exit(code)
    os.close(w)
    got = b""
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while b"\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise_error("MountFailed", detail=f"{mountpoint}: not ready after {READY_TIMEOUT_S:.0f} s; "
                                                  f"see {log_file}")
            part = os.read(r, 4096)
            if not part:
                break
            got += part
    finally:
        os.close(r)
    if got.startswith(b"ok"):
        return pid
    os.waitpid(pid, 0)
    reason = got.decode(errors="replace").removeprefix("error ").strip() or _tail(log_file)
    raise_error("MountFailed", detail=f"{mountpoint}: {reason}; see {log_file}")


def _tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "the mount process stopped"
    return lines[-1] if lines else "the mount process stopped"


@click.command("mount")
@click.argument("args", nargs=-1, metavar="[RP] MOUNTPOINT")
@click.option("--all", "all_points", is_flag=True,
              help="Mount every recovery point, each as a folder named by its time and id.")
@click.option("--foreground", is_flag=True, help="Stay in the foreground until unmounted (Ctrl-C unmounts).")
@click.option("--idle-timeout", default="6h", show_default=True, metavar="DURATION",
              help="Unmount after this long without use (90s, 30m, 6h, 1d; `off` never).")
@click.option("--allow-other", is_flag=True,
              help="Let other users in, with the permissions the files had (needs user_allow_other in "
                   "/etc/fuse.conf when not root).")
@click.option("--passphrase-file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def mount(obj: dict[str, str | None], args: tuple[str, ...], all_points: bool, foreground: bool, idle_timeout: str,
          allow_other: bool, passphrase_file: str | None, as_json: bool) -> None:
    """Mount recovery point RP (an id, a prefix of one, or `latest`), or with --all every one, read-only at
    MOUNTPOINT, an empty folder. Browse and copy with any tool; `safehold unmount MOUNTPOINT` ends it.

    The paths of the backup appear below MOUNTPOINT as they were (for example MOUNTPOINT/home/ann).
    """
    if len(args) != (1 if all_points else 2):
        raise_error("InvalidArgument", what="give a recovery point and a mount point (`safehold mount latest "
                                            "/mnt/restore`), or --all and a mount point")
    ref = None if all_points else args[0]
    mountpoint = os.path.realpath(args[-1])
    timeout_s = parse_duration(idle_timeout)
    problem = mounts.fuse_problem()
    if problem is not None:
        raise_error("FuseUnavailable", detail=problem)
    agent = load_agent(obj.get("home"), passphrase_file)
    if mounts.clean_dead(agent.home, mountpoint) and not as_json:
        click.echo(_("A mount at {path} whose process had stopped was cleaned up.").format(path=mountpoint))
    mounts.check_mountpoint(mountpoint)
    with JobLock(agent.cache.lock_file, "mount"):  # only while opening: a mount must not hold off backups
        points = _points(agent, ref)
    agent.cache.ensure()
    log_file = None if foreground else agent.cache.logs / f"mount-{time.strftime('%Y%m%d-%H%M%S')}.log"
    _close_vault(agent)

    def run(on_ready: Callable[[], None]) -> None:
        _serve(agent, points, ref is not None, mountpoint, timeout_s, allow_other, log_file, on_ready)

    shown = points[0].rp_id if ref is not None else "all"

    def announce(pid: int) -> None:
        if as_json:
            folders = [folder_name(rp).decode() for rp in points] if ref is None else None
            emit_json({"event": "summary", "status": "Mounted", "mountpoint": mountpoint, "pid": pid,
                       "recovery_point": shown, "folders": folders, "idle_timeout_s": timeout_s,
                       "log": str(log_file) if log_file else None})
            return
        what = shown[:8] if ref is not None else _("{count} recovery points").format(count=len(points))
        click.echo(_("Mounted {what} read-only at {path}.").format(what=what, path=mountpoint))
        if timeout_s is not None:
            click.echo(_("It is unmounted after {minutes} minutes without use, or with `safehold unmount {path}`.")
                       .format(minutes=f"{timeout_s / 60:g}", path=mountpoint))

    if foreground or log_file is None:
        run(lambda: announce(os.getpid()))
        return
    announce(_background(run, mountpoint, log_file))


def _wait_gone(pid: int | None) -> None:
    """Give the serving process time to finish after its unmount (it removes its own record)."""
    deadline = time.monotonic() + UNMOUNT_WAIT_S
    while pid is not None and mounts.alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        time.sleep(0.05)


def unmount_one(home: AgentHome, mountpoint: str, lazy: bool) -> str:
    """Unmount one mount point; returns what happened: unmounted, cleaned (a dead mount) or forgotten (only a
    stale record was left)."""
    rec = mounts.find(home, mountpoint)
    st = mounts.state(mountpoint)
    if st == mounts.DEAD:
        mounts.clean_dead(home, mountpoint)
        return "cleaned"
    if st == mounts.OURS:
        problem = mounts.fusermount(mountpoint, lazy)
        if problem is not None:
            raise_error("UnmountFailed", path=mountpoint, reason=problem)
        _wait_gone(rec.pid if rec else None)
        mounts.remove(home, mountpoint)
        return "unmounted"
    if rec is not None:
        mounts.remove(home, mountpoint)
        return "forgotten"
    raise_error("NotMounted", path=mountpoint)


@click.command("unmount")
@click.argument("mountpoint", required=False)
@click.option("--all", "all_mounts", is_flag=True, help="Unmount every recovery point this agent has mounted.")
@click.option("--lazy", is_flag=True, help="Detach now even if in use; the mount goes once no one uses it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def unmount(obj: dict[str, str | None], mountpoint: str | None, all_mounts: bool, lazy: bool, as_json: bool) -> None:
    """Unmount the recovery points mounted at MOUNTPOINT (or, with --all, everywhere). A mount whose process
    was killed ("Transport endpoint is not connected") is cleaned up too."""
    if bool(mountpoint) == all_mounts:
        raise_error("InvalidArgument", what="give a mount point or --all")
    home_dir = obj.get("home")
    home = agent_home(home_dir)
    targets = [r.mountpoint for r in mounts.records(home)] if all_mounts else [os.path.realpath(mountpoint or "")]
    texts = {"unmounted": _("Unmounted {path}."),
             "cleaned": _("Cleaned up {path}: its mount process had stopped."),
             "forgotten": _("{path} was no longer mounted; its record was removed.")}
    for target in targets:
        outcome = unmount_one(home, target, lazy)
        if as_json:
            emit_json({"event": "unmounted", "mountpoint": target, "outcome": outcome})
        else:
            click.echo(texts[outcome].format(path=target))
    if as_json:
        emit_json({"event": "summary", "unmounted": len(targets)})
    elif all_mounts and not targets:
        click.echo(_("Nothing is mounted."))
