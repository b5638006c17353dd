"""The TOML of cert files, without tomllib where it can be.

A cert is TOML in the plain subset the config parser reads without tomllib
(``conf.tomltk._fast_loads``) but for its timestamps (``ctime =
2024-01-01T00:00:00Z``).  Both halves of the IMP read the CA's cert for
every CA-mode curve J, and tomllib, with the re, datetime and calendar
imports around it, costs them milliseconds.  So that parser, taught exactly
one more form, ``YYYY-MM-DDTHH:MM:SSZ``, reads the cert; anything else it
gives up on goes to tomllib, whose result (or error) it then is.
"""

from __future__ import annotations

import sys

from ..conf.tomltk import _FastParser, _GiveUp
from .timestamp import epoch

TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from typing import Any

_DIGITS = "0123456789"
_STAMP_LEN = len("YYYY-MM-DDTHH:MM:SSZ")
_STAMP_SEPARATORS = ((4, "-"), (7, "-"), (10, "T"), (13, ":"), (16, ":"), (19, "Z"))
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class Timestamp:
    """A UTC date-time the fast parser read, as seconds since the epoch."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: int) -> None:
        self.seconds = seconds


def loads(text: str) -> dict[str, Any]:
    """``text`` as tomllib reads it, but with Timestamp for a plain UTC
    date-time; tomllib's error (a ValueError) if it does not parse."""
    if text.isascii() and "\r" not in text:
        try:
            return _CertParser(text).document()
        except _GiveUp:
            pass
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python < 3.11; tomli is absent where mypy runs
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    doc: dict[str, Any] = tomllib.loads(text)
    return doc


def seconds(value: object) -> int | None:
    """Seconds since the epoch of a date-time from loads(), read as UTC
    wall-clock fields (zone and fraction ignored, as upstream); None for
    anything else (a date or time alone too)."""
    if isinstance(value, Timestamp):
        return value.seconds
    if isinstance(value, (str, int, float, list, dict)):
        return None  # tomllib made nothing of datetime's here: do not import it
    import datetime

    if isinstance(value, datetime.datetime):
        v = value
        return epoch(v.year, v.month, v.day, v.hour, v.minute, v.second)
    return None


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _timestamp(text: str, pos: int) -> Timestamp | None:
    """The valid ``YYYY-MM-DDTHH:MM:SSZ`` at ``pos``, or None."""
    stamp = text[pos : pos + _STAMP_LEN]
    if len(stamp) != _STAMP_LEN or any(stamp[i] != sep for i, sep in _STAMP_SEPARATORS):
        return None
    fields = (stamp[0:4], stamp[5:7], stamp[8:10], stamp[11:13], stamp[14:16], stamp[17:19])
    if not all(c in _DIGITS for field in fields for c in field):
        return None
    year, month, day, hour, minute, second = (int(field) for field in fields)
    if year < 1 or not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 59:
        return None
    if not 1 <= day <= _MONTH_DAYS[month - 1] + (month == 2 and _leap(year)):
        return None  # tomllib refuses these: let it say so
    return Timestamp(epoch(year, month, day, hour, minute, second))


class _CertParser(_FastParser):
    def _value(self, pos: int) -> tuple[object, int]:
        stamp = _timestamp(self.text, pos)
        if stamp is None:
            return super()._value(pos)
        end = pos + _STAMP_LEN
        if end < len(self.text) and self.text[end] not in " \t\n#,]":
            raise _GiveUp  # more of a date-time (or an error): tomllib reads it
        return stamp, end
