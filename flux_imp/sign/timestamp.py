"""RFC 38 timestamps: ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, parsed like glibc.

Upstream encodes with strftime("%Y-%m-%dT%TZ") and decodes with glibc
strptime() + timegm(); we mirror glibc's leniency (leading whitespace before
numbers, short fields, day/second overflow normalised, trailing text
ignored) so that the same header text gives the same time here and there.
"""

from __future__ import annotations

import time

_SPACE = b" \t\n\v\f\r"

# (lowest, highest, most digits) for %Y %m %d %H %M %S, and the literal after.
_FIELDS = (
    (0, 9999, 4, b"-"),
    (1, 12, 2, b"-"),
    (1, 31, 2, b"T"),
    (0, 23, 2, b":"),
    (0, 59, 2, b":"),
    (0, 61, 2, b"Z"),
)


def format_time(t: int) -> str:
    """Format POSIX time ``t``; negative times cannot be encoded."""
    if t < 0:
        raise ValueError("negative time")
    tm = time.gmtime(t)
    return (
        f"{tm.tm_year}-{tm.tm_mon:02d}-{tm.tm_mday:02d}"
        f"T{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}Z"
    )


def _number(s: bytes, pos: int, lo: int, hi: int, digits: int) -> tuple[int, int] | None:
    # glibc get_number(): skip spaces, need a digit, read while the value
    # could still grow within range and digits remain.
    while pos < len(s) and s[pos] in _SPACE:
        pos += 1
    if pos >= len(s) or not 0x30 <= s[pos] <= 0x39:
        return None
    val = 0
    n = digits
    while True:
        val = val * 10 + s[pos] - 0x30
        pos += 1
        n -= 1
        if not (n > 0 and val * 10 <= hi and pos < len(s) and 0x30 <= s[pos] <= 0x39):
            break
    if val < lo or val > hi:
        return None
    return val, pos


def parse_time(text: str | bytes) -> int | None:
    """Parse like strptime+timegm; None where upstream would fail."""
    s = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    pos = 0
    vals: list[int] = []
    for lo, hi, digits, sep in _FIELDS:
        got = _number(s, pos, lo, hi, digits)
        if got is None:
            return None
        val, pos = got
        vals.append(val)
        if s[pos : pos + 1] != sep:
            return None
        pos += 1
    t = epoch(*vals)
    return t if t >= 0 else None  # year 0 too, which timegm() refuses


def epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """calendar.timegm() of these fields (month 1-12; days, hours, minutes
    and seconds beyond their range carry over), without its imports: both
    halves of the IMP read curve timestamps, and calendar brings re,
    locale, enum and datetime."""
    # Days since 0000-03-01 in the proleptic Gregorian calendar (years
    # start in March, so that a leap day ends one), then since 1970-01-01.
    y = year - (month <= 2)
    era, year_of_era = divmod(y, 400)
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    return ((days * 24 + hour) * 60 + minute) * 60 + second
