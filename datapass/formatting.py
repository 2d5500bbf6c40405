"""French formatting of numbers, percentages, dates and plurals (Babel, CLDR data), for
pages and mails alike: registered as Jinja filters and globals on the app's environment,
which the mail renderer shares.

``{{ 12345|number }}`` → ``12 345`` (narrow no-break space), ``{{ 0.0|percent }}`` →
``0,0 %``, ``{{ moment|date }}`` → ``28/11/2026`` (Paris), ``{{ moment|datetime }}`` →
``28/11/2026 à 10:00``, ``{{ plural(n, "appel", "appels", zero="aucun appel") }}``.
"""

from __future__ import annotations

from datetime import date as date_type
from datetime import datetime as datetime_type
from typing import Any

from babel import Locale
from babel.dates import format_date as babel_date
from babel.dates import format_datetime as babel_datetime
from babel.numbers import format_decimal, format_percent

from datapass import clock

LOCALE = Locale.parse("fr_FR")
NBSP = "\u00a0"
DATE = "dd/MM/y"
DATETIME = "dd/MM/y 'à' HH:mm"
MISSING = "—"


def number(value: Any, digits: int | None = None) -> str:
    """``12345`` → ``12 345``; ``digits`` fixes the decimals (``1234.5, 1`` → ``1 234,5``)."""
    if value is None or value == "":
        return MISSING
    if digits is None:
        return format_decimal(value, locale=LOCALE)
    pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "")
    return format_decimal(value, format=pattern, locale=LOCALE)


def percent(ratio: Any, digits: int = 1) -> str:
    """A ratio as a French percentage: ``0.123`` → ``12,3 %`` (no-break space before %)."""
    if ratio is None:
        return MISSING
    pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "") + NBSP + "%"
    return format_percent(ratio, format=pattern, locale=LOCALE)


def _paris(moment: datetime_type) -> datetime_type:
    return clock.local(moment)


def date(moment: Any, pattern: str = DATE) -> str:
    """A day (a date, or a moment shown as its Paris day): ``28/11/2026``; ``pattern`` is a
    CLDR pattern (``"d MMMM y"`` → ``28 novembre 2026``)."""
    if moment is None:
        return MISSING
    if isinstance(moment, datetime_type):
        moment = _paris(moment)
    if not isinstance(moment, date_type):
        return str(moment)
    return babel_date(moment, pattern, locale=LOCALE)


def datetime(moment: Any, pattern: str = DATETIME) -> str:
    """A moment in Paris time: ``28/11/2026 à 10:00``. ``pattern`` is a CLDR pattern; a
    ``strftime`` pattern (with ``%``) is still understood."""
    if moment is None:
        return MISSING
    local = _paris(moment)
    if local is None:
        return MISSING
    if "%" in pattern:
        return local.strftime(pattern)
    return babel_datetime(local, pattern, locale=LOCALE)


def month(value: Any) -> str:
    """``2026-11`` (or a date) → ``novembre 2026``."""
    if isinstance(value, str):
        year, _, month_number = value.partition("-")
        value = date_type(int(year), int(month_number), 1)
    return babel_date(value, "LLLL y", locale=LOCALE)


def month_short(value: Any) -> str:
    """``2026-11`` → ``nov. 26`` (a chart's axis)."""
    if isinstance(value, str):
        year, _, month_number = value.partition("-")
        value = date_type(int(year), int(month_number), 1)
    return babel_date(value, "MMM yy", locale=LOCALE)


def plural_form(count: Any) -> str:
    """The CLDR plural category of ``count`` in French: ``one`` for 0 and 1 (and 1,5),
    ``many`` for millions, ``other`` otherwise."""
    return LOCALE.plural_form(abs(count))


def plural(count: Any, one: str, other: str, zero: str | None = None) -> str:
    """``count`` and the word that agrees with it, the number formatted:
    ``plural(1, "jour", "jours")`` → ``1 jour``, ``plural(12000, …)`` → ``12 000 jours``.
    ``zero`` is the wording for nothing (``"aucun appel"``), French preferring it to
    ``0 appel``."""
    count = count or 0
    if count == 0 and zero is not None:
        return zero
    word = one if plural_form(count) == "one" else other
    return f"{number(count)} {word}"


def words(count: Any, one: str, other: str) -> str:
    """Only the word that agrees with ``count`` (for "modifié·s" after a counted noun)."""
    return one if plural_form(count or 0) == "one" else other


def without_api_prefix(name: str | None) -> str:
    """``API Particulier — Statut étudiant`` → ``Particulier — Statut étudiant``, so that a
    sentence saying « à l'API {{ name|without_api_prefix }} » never says « l'API API … »."""
    name = (name or "").strip()
    if name[:4].lower() == "api " and len(name) > 4:
        return name[4:]
    return name


def init_app(app) -> None:
    """Register the filters and helpers on the app's Jinja environment (pages and mails)."""
    env = app.jinja_env
    env.filters.update(
        number=number,
        percent=percent,
        date=date,
        datetime=datetime,
        month=month,
        month_short=month_short,
        without_api_prefix=without_api_prefix,
    )
    env.globals.update(plural=plural, words=words)
