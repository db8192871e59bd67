"""`safehold errors [ID]`: list the error catalog, or explain one error."""

from __future__ import annotations

import click

from safehold import errors
from safehold.cli.render import emit_json
from safehold.errors import raise_error
from safehold.i18n import _


class _Named(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


def _shown(message: str) -> str:
    """A catalog message with its placeholders named: 'cannot be used: <reason>.'"""
    try:
        return message.format_map(_Named())
    except (IndexError, ValueError):
        return message


@click.command("errors")
@click.argument("ident", required=False)
@click.option("--json", "as_json", is_flag=True)
def command(ident: str | None, as_json: bool) -> None:
    """List every error safehold reports, or explain the one with id or code IDENT."""
    if ident is None:
        if as_json:
            emit_json({"errors": [{"id": e.id_text, "code": e.code, "message": e.message} for e in errors.ALL]})
            return
        for e in sorted(errors.ALL, key=lambda e: (e.kind, e.id)):
            click.echo(f"{e.id_text:>12}  {e.code:<40} {_shown(_(e.message))}")
        return
    found = errors.lookup(ident)
    if found is None:
        raise_error("InvalidArgument", what=f"no error has the id or code {ident!r}; `safehold errors` lists them")
    e = found
    if as_json:
        emit_json({"id": e.id_text, "code": e.code, "message": e.message, "causes": list(e.causes),
                   "actions": list(e.actions), "variants": {name: list(acts) for name, acts in e.variants}})
        return
    click.echo(f"{e.id_text} {e.code}\n{_shown(_(e.message))}\n")
    if e.causes:
        click.echo(_("Causes:"))
        for c in e.causes:
            click.echo(f"  - {_(c)}")
    if e.actions:
        click.echo(_("Recommended actions:"))
        for a in e.actions:
            click.echo(f"  - {_(a)}")
    for name, actions in e.variants:
        click.echo(_("Recommended actions ({situation}):").format(situation=name))
        for a in actions:
            click.echo(f"  - {_(a)}")
