"""The error catalog and its translations: ids stable and unique, the article's ids present, docs/errors.md
current, and every message translated into each language with its placeholders intact."""

from __future__ import annotations

import gettext
import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from safehold import errors, i18n
from safehold.errors.table import markdown

from conftest import Cli

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\{[a-z_]*\}")
ARTICLE_IDS = {"34513", "403", "100050", "100110", "0x1FC07", "34506", "34520", "230006", "34528",
               "0x80070570", "0x80070002", "0x80070003", "0x80070005", "0x8007018B"}
ARTICLE_CODES = {"SalChecksumStoreInitializationFailed", "SalBitmapError", "SalLowDiskSpace",
                 "SalVhdInitializationError", "AnotherJobInProgress"}


def _texts(spec: errors.ErrorSpec) -> list[str]:
    return [spec.message, *spec.causes, *spec.actions, *(a for _, acts in spec.variants for a in acts)]


def test_ids_and_codes_are_unique_and_the_articles_are_there() -> None:
    ids = [e.id_text.lower() for e in errors.ALL]
    codes = [e.code for e in errors.ALL]
    assert len(ids) == len(set(ids)) and len(codes) == len(set(codes))
    assert {i.lower() for i in ARTICLE_IDS} <= set(ids)
    assert set(codes) >= ARTICLE_CODES
    for e in errors.ALL:
        assert e.message and e.actions, e.code
        own = 700_000 <= e.id <= 799_999
        assert own == (e in errors.own.ENTRIES), e.code


def test_docs_errors_md_is_current() -> None:
    assert (ROOT / "docs" / "errors.md").read_text() == markdown(), \
        "docs/errors.md is stale: run `python scripts/errors_doc.py`"


def _catalog(lang: str):  # type: ignore[no-untyped-def]
    path = i18n.LOCALE_DIR / lang / "LC_MESSAGES" / "safehold.po"
    with path.open("rb") as f:
        return read_po(f, locale=lang)


@pytest.mark.parametrize("lang", i18n.LANGUAGES[1:])
def test_every_message_is_translated(lang: str) -> None:
    cat = _catalog(lang)
    wanted = {t for e in errors.ALL for t in _texts(e)}
    with (ROOT / "src" / "safehold" / "i18n" / "safehold.pot").open("rb") as f:
        wanted |= {m.id for m in read_po(f) if m.id}
    translated = {m.id: m.string for m in cat if m.id and m.string and not m.fuzzy}
    missing = sorted(wanted - set(translated))
    assert not missing, f"{len(missing)} message(s) lack a {lang} translation, e.g. {missing[:3]}; " \
                        "run `python scripts/i18n.py all` and translate them"
    for msgid, msgstr in translated.items():
        assert set(PLACEHOLDER.findall(msgid)) == set(PLACEHOLDER.findall(msgstr)), (lang, msgid)
        for command in re.findall(r"`safehold [^`]*`", msgid):
            assert command in msgstr, (lang, msgid, command)
    # the compiled catalog the program loads says the same as the .po file
    with (i18n.LOCALE_DIR / lang / "LC_MESSAGES" / "safehold.mo").open("rb") as f:
        mo = gettext.GNUTranslations(f)
    stale = [m for m in wanted if mo.gettext(m) != translated[m]]
    assert not stale, f"safehold.mo of {lang} is stale: run `python scripts/i18n.py compile`"


def test_the_template_holds_every_marked_string() -> None:
    import subprocess
    import sys

    with (ROOT / "src" / "safehold" / "i18n" / "safehold.pot").open("rb") as f:
        kept = {m.id for m in read_po(f) if m.id}
    out = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'scripts'); import i18n; "
                          "print('\\0'.join(m.id for m in i18n.template() if m.id))"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.rstrip("\n")
    assert set(out.split("\0")) == kept, "safehold.pot is stale: run `python scripts/i18n.py all`"


@pytest.mark.parametrize(("env", "word"), [({"LC_ALL": "sv_SE.UTF-8"}, "Rekommenderade"),
                                           ({"LANG": "ru_RU.UTF-8"}, "Рекомендуемые"),
                                           ({"LC_MESSAGES": "zh_CN.UTF-8"}, "建议"),
                                           ({"LANG": "zh_TW.UTF-8"}, "建議"),
                                           ({"LANG": "cs_CZ.UTF-8"}, "Doporučené")])
def test_errors_follow_the_locale(cli: Cli, env: dict[str, str], word: str) -> None:
    r = cli("errors", "34513", env={"LC_ALL": "", "LC_MESSAGES": "", "LANG": "", **env})
    assert r.code == 0 and word in r.out, r.out
    en = cli("errors", "34513", env={"LC_ALL": "", "LC_MESSAGES": "", "LANG": "C"})
    assert "Recommended actions" in en.out


def test_lang_option_wins_over_the_environment(cli: Cli) -> None:
    r = cli("--lang", "cs", "errors", "230006", env={"LC_ALL": "sv_SE.UTF-8"})
    assert r.code == 0 and "Doporučené" in r.out
    assert cli("--lang", "xx", "errors", "230006").code == 2  # an unknown language is refused


def test_locale_names_resolve() -> None:
    assert i18n.resolve("sv_SE.UTF-8") == "sv"
    assert i18n.resolve("zh_HK") == "zh_TW" and i18n.resolve("zh_SG.GB2312") == "zh_CN"
    assert i18n.resolve("C") == i18n.resolve("POSIX") == i18n.resolve("de_DE") == "en"
    assert i18n.resolve("cs") == "cs"


def test_no_message_is_marked_inside_an_f_string() -> None:
    """Babel cannot see _("...") inside an f-string, so such a message would never be translated."""
    pattern = re.compile(r"""\{_\(["']""")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in (ROOT / "src").rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders
