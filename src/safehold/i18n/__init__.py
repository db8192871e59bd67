"""Translations of what users read: gettext catalogs (domain `safehold`) for Swedish, Russian, Simplified and
Traditional Chinese and Czech, English being the source. Made with Babel (scripts/i18n.py); not the catalog of
errors itself, which stays in English in `safehold.errors` and is translated when shown.
"""

from __future__ import annotations

import gettext
import os
from pathlib import Path

DOMAIN = "safehold"
LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "sv", "ru", "zh_CN", "zh_TW", "cs")
_ALIASES = {"zh": "zh_CN", "zh_SG": "zh_CN", "zh_HANS": "zh_CN", "zh_HK": "zh_TW", "zh_MO": "zh_TW",
            "zh_HANT": "zh_TW"}

class _State:
    translations: gettext.NullTranslations = gettext.NullTranslations()
    language = "en"


_state = _State()


def resolve(value: str | None) -> str:
    """Our language for a locale name such as `sv_SE.UTF-8`, `zh_TW`, `C` or `ru`; English when unknown."""
    if not value:
        return "en"
    name = value.split(".", 1)[0].split("@", 1)[0].replace("-", "_")
    if name in ("C", "POSIX", ""):
        return "en"
    lang, _, region = name.partition("_")
    full = f"{lang.lower()}_{region.upper()}" if region else lang.lower()
    if full in LANGUAGES:
        return full
    if full in _ALIASES:
        return _ALIASES[full]
    if lang.lower() in LANGUAGES:
        return lang.lower()
    return _ALIASES.get(lang.lower(), "en")


def from_environment() -> str:
    """LC_ALL, then LC_MESSAGES, then LANG, as the C library reads them."""
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var)
        if value:
            return resolve(value)
    return "en"


def use(language: str | None = None) -> str:
    """Switch to `language` (or the environment's); returns the language in use."""
    lang = resolve(language) if language else from_environment()
    _state.translations = gettext.NullTranslations() if lang == "en" else \
        gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang], fallback=True)
    _state.language = lang
    return lang


def language() -> str:
    return _state.language


def _(message: str) -> str:
    """The translation of `message` in the language in use (the message itself in English)."""
    return _state.translations.gettext(message) if message else message


def N_(message: str) -> str:
    return message


__all__ = ["LANGUAGES", "N_", "_", "from_environment", "language", "resolve", "use"]
