"""Messages in the learner's language, with Python's standard gettext.

The English text in the code is each message's id; locale/zh/LC_MESSAGES/minigpt.po holds the
Chinese translations (and minigpt.mo, compiled from it; locale/README.md says how). The language is
Chinese when MINIGPT_LANG, or else the first of LANGUAGE, LC_ALL, LC_MESSAGES and LANG that is set,
starts with "zh"; otherwise English:

    MINIGPT_LANG=zh python3 train.py     # Chinese, whatever the system's locale
    MINIGPT_LANG=en python3 train.py     # English

Messages are written _("... {name} ...").format(name=...), so a translation can put the values in
the order its own grammar wants.
"""

import contextvars
import functools
import gettext
import locale
import os
import unicodedata
from pathlib import Path

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "minigpt"
LANGUAGE_VARIABLES = ("MINIGPT_LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")


# The language one request asked for (the playground's page says it in Accept-Language): it wins over the
# environment while that request is answered.
REQUESTED = contextvars.ContextVar("requested_language", default=None)


def language():
    """"zh" or "en": a request's, or else the environment's (read on every call, so tests and the playground can
    switch)."""
    if REQUESTED.get():
        return REQUESTED.get()
    for name in LANGUAGE_VARIABLES:
        value = os.environ.get(name, "")
        if value:
            return "zh" if value.split(":")[0].lower().startswith("zh") else "en"
    try:  # Windows sets none of the variables: ask the system
        system = locale.getlocale()[0] or ""
    except ValueError:
        system = ""
    return "zh" if system.lower().startswith(("zh", "chinese")) else "en"


@functools.lru_cache(maxsize=None)
def catalogue(lang):
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[lang], fallback=True)


def _(message, lang=None):
    """message in `lang` ("zh" or "en"; default: the current language), or the English id itself when
    there is no translation."""
    return catalogue(lang or language()).gettext(message)


def width(text):
    """Columns text takes in a terminal: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def ljust(text, columns):
    """text padded with spaces to `columns` terminal columns (str.ljust counts a Chinese character as one)."""
    return text + " " * max(columns - width(text), 0)
