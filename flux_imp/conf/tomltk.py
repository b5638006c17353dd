"""TOML parsing as flux-security's tomltk: pre-screen, parse, convert.

tomllib does the parsing; around it we reproduce libtomlc99's pre-screen,
error texts where they can be mapped, and the conversions tomltk applies
(or refuses) on the way to a plain table.

Every IMP command parses its config (and the signing config) here, and
importing tomllib costs more than the rest of a ``flux-imp version``
(typing, re, datetime, its compiled regexes).  So a small parser reads the
plain subset that IMP and signing configs are written in first (see
``_fast_loads``), and gives up on anything else, leaving that document to
tomllib: the result, or the error, is tomllib's either way.  calendar,
datetime, re and math are likewise imported only where used.
"""

from __future__ import annotations

import errno
import posix
import sys

from .errors import ConfigError

TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from types import ModuleType


def _tomllib() -> ModuleType:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10 only
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    module: ModuleType = tomllib
    return module

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def parse(data: bytes, filename: str = "") -> dict[str, object]:
    """TOML bytes to a table, with tomltk's pre-screen and error texts.

    Not reproduced from libtomlc99, whose parser tomllib is not: the text
    of many syntax errors (the common ones are mapped, the rest read
    "syntax error"; a duplicate key is not "key K exists"), the line of a
    mixed-type array (-1 here), its limit of 10 table-header components,
    its acceptance of bare words as values and of out-of-range dates, and
    its own reading of fractional seconds and of hex integers beyond int64.
    Inline tables nested deeper than Python's stack allows are refused.
    """
    if b"\0" in data:
        raise ConfigError(filename, -1, "Config contains embedded NUL byte")
    reason = _prescreen(data)
    if reason:
        raise ConfigError(filename, -1, reason)
    # Overlong forms and surrogates pass the pre-screen: keep them as lone
    # surrogates so that _string() can refuse them as jansson would.
    text = data.decode("utf-8", "surrogateescape").translate(_HIDE_CONTROLS)
    try:
        table = _fast_loads(text)
        if table is None:
            table = _tomllib_loads(text, filename)
        _check_arrays(table)
        return _table(table)
    except _Reject as exc:
        raise ConfigError(filename, -1, exc.args[0]) from None
    except RecursionError:
        raise ConfigError(filename, -1, "Excessive nesting depth") from None


def _tomllib_loads(text: str, filename: str) -> dict[str, object]:
    tomllib = _tomllib()
    try:
        table: dict[str, object] = tomllib.loads(text, parse_float=_strtod)
    except tomllib.TOMLDecodeError as exc:
        lineno, message = _toml_error(str(exc), text)
        raise ConfigError(filename, lineno, message) from None
    return table


# ------------------------------------------- the plain subset, without tomllib

# What _fast_loads reads, exactly as TOML 1.0 (and tomllib) reads it:
#   * ASCII text with LF line ends, blank lines and comments;
#   * [a.b.c] table headers of bare keys, each naming a new table (and no
#     value or array on its path);
#   * key = value lines with one bare key, new in its table;
#   * values: "basic" strings without escapes, 'literal' strings, decimal
#     integers of up to 18 digits, true, false, and arrays of these
#     (nested, across lines, with comments and a trailing comma).
# Anything else (other characters, CR, quoted or dotted keys, [[...]],
# inline tables, escapes, multi-line strings, floats, dates, other
# integers, a repeated key or table, any syntax error) gives up: the whole
# document then goes to tomllib.  tomltk's own checks run on either result.


class _GiveUp(Exception):
    """Not in the subset: let tomllib read the document."""


_TOML_WS = " \t"
_BARE_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_DECIMAL = frozenset("0123456789")
_MAX_INT_DIGITS = 18  # beyond this tomllib decides (int64 range, int() limits)


def _fast_loads(text: str) -> dict[str, object] | None:
    """The document as tomllib.loads() reads it, or None to ask tomllib."""
    if not text.isascii() or "\r" in text:
        return None
    try:
        return _FastParser(text).document()
    except _GiveUp:
        return None


class _FastParser:
    def __init__(self, text: str) -> None:
        self.text = text

    def document(self) -> dict[str, object]:
        text, end = self.text, len(self.text)
        root: dict[str, object] = {}
        table = root
        pos = 0
        while True:
            pos = self._skip_ws(pos)
            if pos >= end:
                return root
            char = text[pos]
            if char == "\n":
                pos += 1
                continue
            if char == "[":
                if text.startswith("[[", pos):
                    raise _GiveUp
                keys, pos = self._header(pos + 1)
                table = self._new_table(root, keys)
            elif char != "#":
                key, pos = self._key(pos)
                pos = self._skip_ws(pos)
                if not text.startswith("=", pos):
                    raise _GiveUp  # a dotted key, or a syntax error
                value, pos = self._value(self._skip_ws(pos + 1))
                if key in table:
                    raise _GiveUp
                table[key] = value
            pos = self._skip_comment(self._skip_ws(pos))
            if pos < end and text[pos] != "\n":
                raise _GiveUp  # more after the statement

    def _skip_ws(self, pos: int) -> int:
        text, end = self.text, len(self.text)
        while pos < end and text[pos] in _TOML_WS:
            pos += 1
        return pos

    def _skip_comment(self, pos: int) -> int:
        if self.text.startswith("#", pos):
            end = self.text.find("\n", pos)
            return len(self.text) if end < 0 else end
        return pos

    def _skip_array_ws(self, pos: int) -> int:
        # Whitespace, newlines and comments, as many as there are.
        while True:
            after = self._skip_comment(self._skip_ws(pos))
            if self.text.startswith("\n", after):
                after += 1
            if after == pos:
                return pos
            pos = after

    def _key(self, pos: int) -> tuple[str, int]:
        text, end, start = self.text, len(self.text), pos
        while pos < end and text[pos] in _BARE_KEY:
            pos += 1
        if pos == start:
            raise _GiveUp  # a quoted key, or a syntax error
        return text[start:pos], pos

    def _header(self, pos: int) -> tuple[list[str], int]:
        keys = []
        while True:
            key, pos = self._key(self._skip_ws(pos))
            keys.append(key)
            pos = self._skip_ws(pos)
            if not self.text.startswith(".", pos):
                break
            pos += 1
        if not self.text.startswith("]", pos):
            raise _GiveUp
        return keys, pos + 1

    @staticmethod
    def _new_table(root: dict[str, object], keys: list[str]) -> dict[str, object]:
        table = root
        for key in keys[:-1]:
            nested = table.setdefault(key, {})  # tables on the way are made implicitly
            if not isinstance(nested, dict):
                raise _GiveUp
            table = nested
        if keys[-1] in table:
            raise _GiveUp  # defined before, explicitly or not: tomllib judges
        new: dict[str, object] = {}
        table[keys[-1]] = new
        return new

    def _value(self, pos: int) -> tuple[object, int]:
        text = self.text
        char = text[pos : pos + 1]
        if char in ('"', "'"):
            if text.startswith(char * 3, pos):
                raise _GiveUp  # a multi-line string
            close = text.find(char, pos + 1)
            value = text[pos + 1 : close]
            if close < 0 or "\n" in value or (char == '"' and "\\" in value):
                raise _GiveUp  # unterminated, or escapes
            return value, close + 1
        if text.startswith("true", pos):
            return True, pos + 4
        if text.startswith("false", pos):
            return False, pos + 5
        if char == "[":
            return self._array(pos + 1)
        return self._integer(pos)

    def _array(self, pos: int) -> tuple[list[object], int]:
        # tomllib's parse_array(): values separated by commas, one trailing
        # comma allowed, whitespace, newlines and comments anywhere between.
        text = self.text
        array: list[object] = []
        pos = self._skip_array_ws(pos)
        if text.startswith("]", pos):
            return array, pos + 1
        while True:
            value, pos = self._value(pos)
            array.append(value)
            pos = self._skip_array_ws(pos)
            if text.startswith("]", pos):
                return array, pos + 1
            if not text.startswith(",", pos):
                raise _GiveUp
            pos = self._skip_array_ws(pos + 1)
            if text.startswith("]", pos):
                return array, pos + 1

    def _integer(self, pos: int) -> tuple[int, int]:
        text, end, start = self.text, len(self.text), pos
        if text.startswith(("+", "-"), pos):
            pos += 1
        digits = pos
        while pos < end and text[pos] in _DECIMAL:
            pos += 1
        count = pos - digits
        if not 0 < count <= _MAX_INT_DIGITS or (count > 1 and text[digits] == "0"):
            raise _GiveUp  # not a number, a long one, or a leading zero
        if pos < end and text[pos] not in " \t\n#,]":
            raise _GiveUp  # a float, date, time, underscore, 0x... or an error
        return int(text[start:pos]), pos


# ------------------------------------------------- tomltk's pre-screen

_MAX_NESTING = 32
_MAX_LINES = 10000
_Q2, _Q1, _BSL, _HASH, _LBR, _RBR = b'"', b"'", b"\\", b"#", b"[", b"]"
# Lead bytes tomltk accepts (it skips overlong, surrogate and range checks).
_UTF8_LENGTH = {
    **dict.fromkeys(range(0xC2, 0xE0), 2),
    **dict.fromkeys(range(0xE0, 0xF0), 3),
    **dict.fromkeys(range(0xF0, 0xF5), 4),
}


# 1 for the bytes _prescreen() must look at in some state: controls but
# tab, DEL, non-ASCII, quotes, backslash, '#', '[', ']' (and '\n').  Any
# other byte changes nothing while no escape is pending, in any state, so
# runs of them are skipped (in C, by find) instead of looked at one by one.
# Built from slices: a generator over 256 bytes costs every start 10 us.
_MARKS_TABLE = bytearray(b"\1" * 0x20 + bytes(0x7F - 0x20) + b"\1" * 0x81)
_MARKS_TABLE[0x09] = 0
for _byte in b"\"'\\#[]":
    _MARKS_TABLE[_byte] = 1
_MARKS = bytes(_MARKS_TABLE)
del _MARKS_TABLE, _byte


def _prescreen(buf: bytes) -> str | None:
    """tomltk's validate_toml_syntax(): a scan that fends off inputs known
    to hang libtomlc99.  Returns the rejection text, or None."""
    n = len(buf)
    depth = lines = 0
    in_string = b""  # the quote that opened a one-line string
    ml_double = ml_single = escape = in_array = False
    marks = buf.translate(_MARKS)
    i = 0
    while i < n:
        if not escape:
            i = marks.find(1, i)
            if i < 0:
                break
        c = buf[i]
        if c >= 0x80:
            seq = _UTF8_LENGTH.get(c, 0)
            if not seq:
                return f"Invalid UTF-8 byte (0x{c:02X}) at position {i}"
            if i + seq > n:
                return f"Truncated UTF-8 sequence at position {i}"
            for j in range(i + 1, i + seq):
                if not 0x80 <= buf[j] <= 0xBF:
                    return f"Invalid UTF-8 continuation byte (0x{buf[j]:02X}) at position {j}"
            i += seq
            continue
        if not (in_string or ml_double or ml_single) and (
            (c < 0x20 and c not in (0x09, 0x0A, 0x0D)) or c == 0x7F
        ):
            return f"Invalid control character (0x{c:02X}) at position {i}"
        if c == 0x0A:
            lines += 1
            if lines > _MAX_LINES:
                return f"Input too large (>{_MAX_LINES} lines)"
        if buf[i : i + 6] in (_Q2 * 6, _Q1 * 6):
            return "Adjacent triple-quote sequences not allowed"
        ch = buf[i : i + 1]
        if not escape and buf[i : i + 3] in (_Q2 * 3, _Q1 * 3):
            opening = not (ml_double or ml_single or in_string)
            if ch == _Q2 and (ml_double or opening):
                ml_double = not ml_double
                i += 3
                continue
            if ch == _Q1 and (ml_single or opening):
                ml_single = not ml_single
                i += 3
                continue
        if ml_double:  # basic multi-line strings have escapes
            escape = not escape and ch == _BSL
        elif ml_single:  # literal multi-line strings have none
            pass
        elif not escape and ch in (_Q2, _Q1):
            if not in_string:
                in_string = ch
            elif in_string == ch:
                in_string = b""
        elif in_string:
            if in_string == _Q2:
                escape = not escape and ch == _BSL
        else:
            escape = False
            if ch == _HASH:
                if in_array:
                    return "Comment character inside array value"
                end = buf.find(b"\n", i)
                i = n if end < 0 else end
                continue
            if ch == _LBR:
                depth += 1
                if depth == 1 and not in_array:
                    # '[' after other text on its line opens an array value;
                    # at the start of a line it is a table header.
                    head = buf[buf.rfind(b"\n", 0, i) + 1 : i]
                    in_array = head.strip(b" \t") != b""
                elif depth > 1:
                    in_array = True
                if depth > _MAX_NESTING:
                    return f"Excessive bracket nesting depth ({depth})"
            elif ch == _RBR:
                depth -= 1
                if depth == 0:
                    in_array = False
                if depth < 0:
                    return "Unbalanced brackets"
        i += 1
    if depth != 0:
        return "Unbalanced brackets"
    if ml_double:
        return 'Unterminated multi-line string (""")'
    if ml_single:
        return "Unterminated multi-line string (''')"
    return None


# ------------------------------------------- parse errors and conversion

# tomllib's wording -> libtomlc99's, for the errors both parsers see alike;
# the third text is for a table header line.  Anything else: "syntax error".
_TOML_TEXTS = (
    ("Expected '=' after a key", "missing =", ""),
    ("Unterminated string", "unterminated quote", ""),
    ("Illegal character '\\n'", "unterminated quote", ""),
    ("Found invalid character '\\n'", "unterminated s-quote", ""),
    ('Expected "\'"', "unterminated s-quote", ""),
    ("Unescaped '\\' in a string", "bad escape char", ""),
    ("Invalid hex value", "expect hex char", ""),
    ("Expected ']' at the end", "expects ]", ""),
    ("Expected ']]' at the end", "expects ]]", ""),
    ("Unclosed inline table", "newline not allowed in inline table", ""),
    ("Expected newline or end of document", "extra chars after value", "extra chars after ] or ]]"),
    ("Invalid initial character for a key", "syntax error", "invalid or missing key"),
)
_AT_LINE = r"\(at line (\d+), column \d+\)\s*\Z"


def _toml_error(message: str, text: str) -> tuple[int, str]:
    import re  # errors only: compiled (and cached by re) on first use

    # libtomlc99 says "line N: what"; tomltk keeps N and "what".
    found = re.search(_AT_LINE, message)
    # At the end of the document libtomlc99 is still on the last line.
    lineno = int(found.group(1)) if found else text.count("\n", 0, len(text) - 1) + 1
    lines = text.split("\n")
    line = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
    for prefix, upstream, on_header in _TOML_TEXTS:
        if message.startswith(prefix):
            return lineno, on_header if on_header and line.lstrip().startswith("[") else upstream
    return lineno, "syntax error"


class _Reject(Exception):
    """Raised inside the post-parse walks; the caller adds file and line."""


# strtod() sets ERANGE on overflow and underflow, and libtomlc99 then
# refuses the value; tomllib would quietly give inf or 0.0.
_ERANGE = object()


def _strtod(literal: str) -> object:
    import math

    value = float(literal)
    mantissa = literal.lower().partition("e")[0]
    if math.isinf(value) and "inf" not in literal:
        return _ERANGE
    if abs(value) < sys.float_info.min and any(d in mantissa for d in "123456789"):
        return _ERANGE
    return value


def _as_double(value: int) -> object:
    try:
        return float(value)
    except OverflowError:
        return _ERANGE


def _valtype(value: object) -> str:
    """libtomlc99's scalar type letter, used to refuse mixed arrays."""
    if isinstance(value, str):
        return "s"
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        # Beyond int64 strtoll() fails and strtod() takes over.
        if _INT64_MIN <= value <= _INT64_MAX:
            return "i"
        return "d" if _as_double(value) is not _ERANGE else "u"
    if isinstance(value, float):
        return "d"
    from datetime import date, datetime, time  # only tomllib makes these

    if isinstance(value, datetime):
        return "T"
    return "D" if isinstance(value, date) else "t" if isinstance(value, time) else "u"


def _kind(value: object) -> str:
    return "t" if isinstance(value, dict) else "a" if isinstance(value, list) else "v"


def _check_arrays(value: object) -> None:
    """libtomlc99 (TOML 0.5) wants every array homogeneous."""
    if isinstance(value, dict):
        for item in value.values():
            _check_arrays(item)
    elif isinstance(value, list):
        for item in value:
            kind = _kind(item)
            if kind != _kind(value[0]):
                raise _Reject(
                    "a string array can only contain strings"
                    if kind == "v"
                    else "array type mismatch while processing array of "
                    + ("arrays" if kind == "a" else "tables")
                )
            if kind == "v" and _valtype(item) != _valtype(value[0]):
                raise _Reject("array type mismatch while processing array of values")
            _check_arrays(item)


# Raw control characters the pre-screen lets through (in strings and
# comments) are fine for libtomlc99 but not for tomllib: pass them through
# tomllib as lone surrogates that decoding never produces, and back.
_CONTROLS = [*range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]
_HIDE_CONTROLS = {c: 0xDC00 + c for c in _CONTROLS}
_SHOW_CONTROLS = {0xDC00 + c: c for c in _CONTROLS}


def _unconvertible(errnum: int) -> _Reject:
    # cf's text when tomltk_table_to_json() fails; errno says why.
    return _Reject(f"converting TOML to JSON: {posix.strerror(errnum)}")


def _string(value: str) -> str:
    # jansson refuses invalid UTF-8 (as ENOMEM); C strings end at a NUL.
    # An ASCII string (nearly every one) has no lone surrogate: neither
    # invalid UTF-8 nor a hidden control character.
    if value.isascii():
        return value.split("\0", 1)[0]
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        raise _unconvertible(errno.ENOMEM)
    return value.translate(_SHOW_CONTROLS).split("\0", 1)[0]


def _table(table: dict[str, object]) -> dict[str, object]:
    # libtomlc99 lists a table's plain values, then its arrays, then its
    # tables; that order becomes the order of keys (and of cf_check errors).
    def group(item: tuple[str, object]) -> int:
        return "vat".index(_kind(item[1]))

    return {_string(k): _value(v) for k, v in sorted(table.items(), key=group)}


def _value(value: object) -> object:
    """tomltk's value_to_json(): what libtomlc99 can convert, or _Reject."""
    if isinstance(value, dict):
        return _table(value)
    if isinstance(value, list):
        return [_value(v) for v in value]
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bool) or (isinstance(value, int) and _valtype(value) == "i"):
        return value
    if isinstance(value, int):
        value = _as_double(value)
    if isinstance(value, float):
        return value
    import calendar
    from datetime import datetime, timezone  # only tomllib makes these

    if isinstance(value, datetime):
        # Upstream ignores the UTC offset and any fraction of a second, and
        # cannot store times before the epoch.
        t = calendar.timegm(value.timetuple()[:6])
        if t >= 0:
            return datetime.fromtimestamp(t, timezone.utc)
    # A bare date or time, a number out of range.
    raise _unconvertible(errno.EINVAL)
