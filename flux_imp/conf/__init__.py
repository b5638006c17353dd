"""The cf layer: load, merge, check and read TOML like flux-security's cf.

Config files are found with glob(3), each is pre-screened and parsed the
way upstream's tomltk does (libtomlc99), and the results are merged by a
shallow top-level update.  Values are plain Python objects (dict, list,
str, int, float, bool, datetime); the lenient accessors below read them
the way cf.h does, so a wrong-typed value reads as false / "" / 0.

Where upstream's parser and tomllib disagree we follow upstream when the
difference is visible after parsing (key order, mixed arrays, values
libtomlc99 cannot convert); what cannot be recovered from tomllib is
listed in the docstring of ``parse``.
"""

from __future__ import annotations

import posix

from ..fs import read_all
from . import cglob
from .errors import ConfigError
from .tomltk import parse

# Every IMP command loads its config through here: typing, datetime and
# math cost start-up time, so they are imported only where needed.  A
# value can only be a datetime once tomllib has made one (and loaded the
# module), so datetime is tested for last and imported there.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime
    from typing import TypeGuard

__all__ = ["ConfigError", "Option", "check", "load_file", "load_glob", "parse"]


class Option(tuple[str, str, bool]):
    """One row of a cf_check() option table: a named tuple
    (``key, type, required``) without typing.  ``type`` is a typeof() name:
    "int64", "string", "table", ..."""

    __slots__ = ()

    def __new__(cls, key: str, type: str, required: bool) -> Option:
        return tuple.__new__(cls, (key, type, required))

    @property
    def key(self) -> str:
        return self[0]

    @property
    def type(self) -> str:
        return self[1]

    @property
    def required(self) -> bool:
        return self[2]

    def __repr__(self) -> str:
        return f"Option(key={self.key!r}, type={self.type!r}, required={self.required!r})"


def _is_datetime(value: object) -> TypeGuard[datetime]:
    from datetime import datetime

    return isinstance(value, datetime)


# ---------------------------------------------------------------- loading


def load_glob(
    pattern: str, *, base: dict[str, object] | None = None
) -> tuple[dict[str, object], int]:
    """Merge every file matching ``pattern`` into a copy of ``base``.

    Returns the merged table and the number of files; no match returns
    ``(copy of base, 0)`` and the caller words its own message.  Any file
    error aborts the whole load, leaving ``base`` untouched.
    """
    merged = dict(base or {})
    try:
        paths = cglob.glob(pattern)
    except cglob.ReadError:
        raise ConfigError(pattern, -1, "Read error") from None
    for path in paths:
        # Paranoia is read from what is merged so far: an earlier file may
        # turn it on or off for the files that sort after it.
        merged.update(load_file(path, paranoid=_paranoid(merged)))
    return merged, len(paths)


def _paranoid(cf: dict[str, object]) -> bool:
    if as_bool(cf.get("enable-path-paranoia")):
        return True
    return posix.geteuid() == 0 and not as_bool(cf.get("disable-path-paranoia"))


def load_file(path: str, *, paranoid: bool) -> dict[str, object]:
    """Parse one file (cf_update_file), checking its security if paranoid."""
    if paranoid:
        from .pathcheck import PathError, path_is_secure  # only when paranoid

        try:
            path_is_secure(path)
        except PathError as exc:
            raise ConfigError(path, -1, f"unable to open: {exc.text}") from None
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(path, -1, posix.strerror(exc.errno or 0)) from None
    try:
        # Like fopen()+fread(): opening a directory works, reading it fails.
        data = read_all(fd)
    except OSError as exc:
        raise ConfigError(path, -1, f"read error: {posix.strerror(exc.errno or 0)}") from None
    finally:
        posix.close(fd)
    return parse(data, path)


# ------------------------------------------------------------ accessors


def typeof(value: object) -> str:
    """cf_typeof(): the cf type name of a loaded value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if _is_datetime(value):
        return "timestamp"
    return "unknown"


def get_in(table: object, key: str) -> object | None:
    """cf_get_in(): ``table[key]``, or None if absent or not a table."""
    return table.get(key) if isinstance(table, dict) else None


def as_int(value: object) -> int:
    """cf_int64(): an integer, else 0 (a bool or a double is not one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_str(value: object) -> str:
    """cf_string(): a string, else ""."""
    return value if isinstance(value, str) else ""


def as_bool(value: object) -> bool:
    """cf_bool(): true only for a boolean true (not "true", not 1)."""
    return value is True


def as_timestamp(value: object) -> int:
    """cf_timestamp(): POSIX seconds of a datetime (naive = UTC), else 0."""
    import math
    from datetime import datetime, timezone

    if not isinstance(value, datetime):
        return 0
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    t = math.floor(value.timestamp())
    return t if t >= 0 else 0


def array_contains(value: object, text: str) -> bool:
    """cf_array_contains(): some string entry equals ``text``."""
    return isinstance(value, list) and any(isinstance(v, str) and v == text for v in value)


def array_contains_match(value: object, text: str) -> bool:
    """cf_array_contains_match(): some string entry, as an fnmatch(3)
    pattern with flags 0, matches ``text``."""
    return isinstance(value, list) and any(
        isinstance(v, str) and cglob.fnmatch(v, text) for v in value
    )


def check(table: object, opts: Sequence[Option], *, strict: bool, anytab: bool) -> None:
    """cf_check(): refuse unknown keys (if ``strict``; with ``anytab``,
    tables need not be listed), missing required keys and wrong types."""
    if not isinstance(table, dict):
        if not _is_datetime(table):
            raise ConfigError("", -1, "invalid config object")
        # Upstream holds a timestamp as the object {"iso-8601-ts": "..."}.
        table = {"iso-8601-ts": table.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if strict:
        known = {opt.key for opt in opts}
        for key, value in table.items():
            # Upstream stores a timestamp as an object, so it passes as a table.
            if key not in known and not (
                anytab and (isinstance(value, dict) or _is_datetime(value))
            ):
                raise ConfigError("", -1, f"key '{key}' is unknown")
    for opt in opts:
        if opt.key not in table:
            if opt.required:
                raise ConfigError("", -1, f"'{opt.key}' must be set")
        elif typeof(table[opt.key]) != opt.type:
            raise ConfigError("", -1, f"'{opt.key}' must be of type {opt.type}")
