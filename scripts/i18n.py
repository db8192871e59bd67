"""Translation catalogs with Babel: extract the messages, merge them into each language, compile.

    python scripts/i18n.py extract   # src/safehold/i18n/safehold.pot from the error catalog and the sources
    python scripts/i18n.py update    # merge the template into locale/<lang>/LC_MESSAGES/safehold.po
    python scripts/i18n.py compile   # write the .mo files next to them
    python scripts/i18n.py all       # the three in order

Messages come from two places: every text of the error catalog (message, causes, actions, variant actions),
and strings in the sources marked with _() or N_().
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from safehold import errors
from safehold.i18n import DOMAIN, LANGUAGES, LOCALE_DIR

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "safehold"
POT = PACKAGE / "i18n" / f"{DOMAIN}.pot"


def template() -> Catalog:
    cat = Catalog(project="safehold", domain=DOMAIN, fuzzy=False)
    for spec in errors.ALL:
        where = (f"errors:{spec.code}", None)
        for text in (spec.message, *spec.causes, *spec.actions, *(a for _, acts in spec.variants for a in acts)):
            cat.add(text, locations=[where])
    for filename, lineno, message, comments, _context in extract_from_dir(
            str(PACKAGE), keywords={"_": None, "N_": None}, comment_tags=("TRANSLATORS:",)):
        if isinstance(message, str) and message:
            cat.add(message, locations=[(f"safehold/{filename}", lineno)], auto_comments=comments)
    _plain(cat)
    return cat


def _plain(cat: Catalog) -> None:
    """Our messages use str.format placeholders, never %: Babel guesses python-format from a "5-10 % of"."""
    for message in cat:
        message.flags.discard("python-format")


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def extract() -> None:
    buf = io.BytesIO()
    write_po(buf, template(), omit_header=False, sort_output=True, include_lineno=False)
    POT.write_bytes(buf.getvalue())


def update() -> None:
    tmpl = template()
    for lang in LANGUAGES[1:]:
        path = po_path(lang)
        if path.exists():
            with path.open("rb") as f:
                cat = read_po(f, locale=lang, domain=DOMAIN)
            cat.update(tmpl, no_fuzzy_matching=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            cat = Catalog(locale=lang, domain=DOMAIN, project="safehold", fuzzy=False)
            cat.update(tmpl, no_fuzzy_matching=True)
        _plain(cat)
        buf = io.BytesIO()
        write_po(buf, cat, sort_output=True, include_lineno=False, ignore_obsolete=True)
        path.write_bytes(buf.getvalue())


def compile_all() -> None:
    for lang in LANGUAGES[1:]:
        path = po_path(lang)
        with path.open("rb") as f:
            cat = read_po(f, locale=lang, domain=DOMAIN)
        buf = io.BytesIO()
        write_mo(buf, cat, use_fuzzy=False)
        path.with_suffix(".mo").write_bytes(buf.getvalue())


def main(argv: list[str]) -> None:
    steps = {"extract": [extract], "update": [update], "compile": [compile_all],
             "all": [extract, update, compile_all]}
    if len(argv) != 1 or argv[0] not in steps:
        raise SystemExit(__doc__)
    for step in steps[argv[0]]:
        step()


if __name__ == "__main__":
    main(sys.argv[1:])
