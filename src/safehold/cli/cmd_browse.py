"""`safehold ls` and `safehold find`: look into recovery points without restoring them."""

from __future__ import annotations

import stat
import time
from datetime import datetime

import click

from safehold.agent.browse import Browser
from safehold.agent.reader import ChunkReader
from safehold.cli.context import load_agent, resolve_rp
from safehold.cli.render import emit_json, human_bytes, human_time, path_text
from safehold.errors import raise_error
from safehold.formats import tree
from safehold.formats.chunks import Sealer
from safehold.formats.tree import Entry
from safehold.i18n import _

_KIND = {tree.FILE: stat.S_IFREG, tree.DIR: stat.S_IFDIR, tree.SYMLINK: stat.S_IFLNK, tree.FIFO: stat.S_IFIFO,
         tree.CHARDEV: stat.S_IFCHR, tree.BLOCKDEV: stat.S_IFBLK, tree.SOCKET: stat.S_IFSOCK}


def _owner(e: Entry) -> tuple[str, str]:
    """Names as recorded at backup; numbers when none were."""
    return e.user or str(e.uid), e.group or str(e.gid)


def _entry_json(path: bytes, e: Entry) -> dict[str, object]:
    return {"path": path_text(path), "type": e.type, "mode": stat.filemode(_KIND[e.type] | e.mode), "uid": e.uid,
            "gid": e.gid, "user": e.user, "group": e.group, "size": e.size, "mtime_ns": e.mtime_ns,
            "target": path_text(e.target) if e.target is not None else None}


def _line(e: Entry, name: bytes) -> str:
    user, group = _owner(e)
    size = str(e.size) if e.type != tree.DIR else "-"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.mtime_ns / 1e9))
    text = f"{stat.filemode(_KIND[e.type] | e.mode)} {e.nlink:>3} {user:<8} {group:<8} {size:>12} {when} " \
           f"{path_text(name)}"
    if e.target is not None:
        text += f" -> {path_text(e.target)}"
    return text


@click.command("ls")
@click.argument("rp_ref", metavar="RP")
@click.argument("path", default="/")
@click.option("--passphrase-file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ls(obj: dict[str, str | None], rp_ref: str, path: str, passphrase_file: str | None, as_json: bool) -> None:
    """List PATH (default /) in recovery point RP (id, id prefix or `latest`) as `ls -l` would."""
    agent = load_agent(obj.get("home"), passphrase_file)
    rp = resolve_rp(agent, rp_ref)
    browser = Browser(ChunkReader(agent.vault, agent.machine_id, Sealer(agent.keys)))
    for e in browser.listing(rp.root, path):
        if as_json:
            emit_json({"event": "entry", **_entry_json(e.name, e)})
        else:
            click.echo(_line(e, e.name))


def _since(value: str | None) -> int | None:
    if value is None:
        return None
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return int(datetime.strptime(value, fmt).timestamp() * 1e9)
        except ValueError:
            continue
    raise_error("InvalidArgument", what="--since takes YYYY-MM-DD or YYYY-MM-DD HH:MM (local time)")


@click.command("find")
@click.argument("pattern")
@click.option("--since", metavar="DATE", help="Only recovery points made at or after DATE (YYYY-MM-DD[ HH:MM]).")
@click.option("--passphrase-file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def find(obj: dict[str, str | None], pattern: str, since: str | None, passphrase_file: str | None,
         as_json: bool) -> None:
    """Find files whose name matches PATTERN (shell wildcards; a PATTERN with '/' matches whole paths) in all
    recovery points, and show each distinct version with the recovery points that hold it."""
    agent = load_agent(obj.get("home"), passphrase_file)
    after = _since(since)
    rps = [rp for rp in agent.vault.recovery_points(agent.machine_id) if after is None or rp.created_ns >= after]
    browser = Browser(ChunkReader(agent.vault, agent.machine_id, Sealer(agent.keys)))
    count = 0
    for path, versions in browser.find(rps, pattern):
        count += 1
        if as_json:
            emit_json({"event": "match", "path": path_text(path), "versions": [
                {**_entry_json(path, v.entry), "recovery_points": [r.rp_id for r in v.recovery_points]}
                for v in versions]})
            continue
        click.echo(path_text(path))
        for v in versions:
            first, last = v.recovery_points[0], v.recovery_points[-1]
            span = first.rp_id[:8] if first is last else f"{first.rp_id[:8]}..{last.rp_id[:8]}"
            click.echo("  " + _("{size}  modified {mtime}  in {count} recovery point(s): {span} ({when})").format(
                size=human_bytes(v.entry.size), mtime=human_time(v.entry.mtime_ns), count=len(v.recovery_points),
                span=span, when=human_time(first.created_ns)))
    if as_json:
        emit_json({"event": "summary", "matches": count, "recovery_points": len(rps)})
    elif count == 0:
        click.echo(_("Nothing matches {pattern} in {count} recovery point(s).").format(pattern=pattern,
                                                                                     count=len(rps)))
