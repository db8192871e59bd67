"""The `safehold` entry point: the command group, global options, and error handling at the edge.

Every SafeholdError becomes its id, message and recommended actions with the error's exit code;
anything unexpected is reported once, without a traceback unless SAFEHOLD_DEBUG is set.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from typing import NoReturn

import click

from safehold import __version__, i18n
from safehold.cli.render import render_error
from safehold.errors import SafeholdError, error

# Each command's module is imported only when that command runs (or help lists it): a backup does not pay for
# the vault server, FUSE or TLS imports. Name -> (module in safehold.cli, attribute).
COMMANDS = {
    "vault": ("cmd_vault", "command"), "register": ("cmd_register", "command"),
    "backup": ("cmd_backup", "command"), "recovery-points": ("cmd_recovery_points", "command"),
    "restore": ("cmd_restore", "command"), "check": ("cmd_check", "command"),
    "settings": ("cmd_settings", "command"), "doctor": ("cmd_doctor", "command"),
    "errors": ("cmd_errors", "command"), "policy": ("cmd_policy", "command"), "jobs": ("cmd_jobs", "command"),
    "agent": ("cmd_agent", "command"), "ls": ("cmd_browse", "ls"), "find": ("cmd_browse", "find"),
    "mount": ("cmd_mount", "mount"), "unmount": ("cmd_mount", "unmount"),
}
VAULT_SUBCOMMANDS = ("cmd_vault_migrate", "cmd_vault_serve", "cmd_vault_housekeeping", "cmd_vault_jobs")


def _load(name: str) -> click.Command:
    module, attr = COMMANDS[name]
    command: click.Command = getattr(importlib.import_module(f"safehold.cli.{module}"), attr)
    if name == "vault" and isinstance(command, click.Group) and not command.commands.get("serve"):
        for sub in VAULT_SUBCOMMANDS:
            command.add_command(importlib.import_module(f"safehold.cli.{sub}").command)
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _load(cmd_name) if cmd_name in COMMANDS else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--home", envvar="SAFEHOLD_HOME", type=click.Path(file_okay=False),
              help="Agent folder (registration, token, passphrase). Default: /var/lib/safehold for root, "
                   "else ~/.local/share/safehold. Env: SAFEHOLD_HOME.")
@click.option("--lang", type=click.Choice(i18n.LANGUAGES, case_sensitive=False),
              help="Language of messages. Default: from LC_ALL, LC_MESSAGES or LANG.")
@click.version_option(__version__, prog_name="safehold")
@click.pass_context
def cli(ctx: click.Context, home: str | None, lang: str | None) -> None:
    """safehold: encrypted, deduplicating backups into a vault you run yourself."""
    i18n.use(lang)
    ctx.obj = {"home": home}


# Trees are walked recursively, one Python frame pair per folder level; allow deep trees.
RECURSION_LIMIT = 100_000


def main(argv: list[str] | None = None) -> None:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    i18n.use(None)  # the environment's language, until --lang says otherwise
    as_json = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        _run(argv, as_json)
    finally:
        _settle()


def _settle() -> None:
    """Before the interpreter exits: close the vaults the command opened (SQLite writes its log back into the
    catalog on the last close: here, in order, not in teardown), then freeze what is left, so that the exit's
    collections need not visit every object of the libraries loaded (about 60 ms of each command)."""
    service = sys.modules.get("safehold.vault.service")
    if service is not None:
        service.VaultService.close_all()
    gc.collect()  # what the command left in cycles is closed now (files flushed, databases written back)
    gc.freeze()


def _run(argv: list[str] | None, as_json: bool) -> NoReturn:
    try:
        code = cli.main(args=argv, prog_name="safehold", standalone_mode=False)
    except SafeholdError as exc:
        render_error(exc, as_json)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo(i18n._("Aborted."), err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        render_error(error("Interrupted"), as_json)
        sys.exit(130)
    except OSError as exc:
        if os.environ.get("SAFEHOLD_DEBUG"):
            raise
        render_error(error("InvalidArgument", what=f"{exc.filename or ''}: {exc.strerror or exc}"), as_json)
        sys.exit(1)
    except Exception as exc:  # the last line of defence: one message, no traceback
        if os.environ.get("SAFEHOLD_DEBUG"):
            raise
        render_error(error("InternalError", detail=f"{type(exc).__name__}: {exc}"), as_json)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
