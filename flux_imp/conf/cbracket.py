"""Bracket expressions of fnmatch(3) (``[...]``), as glibc scans them in
the "C" locale: cglob's, imported only for a pattern that has one (config
patterns rarely do, and every IMP command globs its config).
"""

from __future__ import annotations

_ESC, _OPEN, _CLOSE, _DOT, _DASH, _COLON, _EQUAL = b"\\[].-:="

_CLASSES = {
    b"alnum": b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"alpha": b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    b"blank": b" \t",
    b"cntrl": bytes(range(32)) + b"\x7f",
    b"digit": b"0123456789",
    b"graph": bytes(range(33, 127)),
    b"lower": b"abcdefghijklmnopqrstuvwxyz",
    b"print": bytes(range(32, 127)),
    b"punct": bytes(c for c in range(33, 127) if not chr(c).isalnum()),
    b"space": b" \t\n\v\f\r",
    b"upper": b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    b"xdigit": b"0123456789ABCDEFabcdef",
}
_CLASS_MAX = 256  # glibc's CHAR_CLASS_MAX_LENGTH
LITERAL = -2  # bracket(): an unterminated '[', an ordinary character


def _at(p: bytes, k: int) -> int:
    return p[k] if k < len(p) else 0  # C strings end in NUL


def _class_name(p: bytes, i: int) -> tuple[bytes, int] | None:
    # At the ':' of "[:name:]": the name and the index after ":]", or None
    # when this cannot be a class (then '[' is ordinary); index -1 if too long.
    name = bytearray()
    while True:
        if len(name) == _CLASS_MAX:
            return b"", -1
        i += 1
        c = _at(p, i)
        if c == _COLON and _at(p, i + 1) == _CLOSE:
            return bytes(name), i + 2
        if not 0x61 <= c < 0x7A:  # 'a' <= c < 'z', as glibc tests it
            return None
        name.append(c)


def _collating(p: bytes, i: int) -> tuple[int, int] | None:
    # At the '.' of "[.c.]": c and the index after ".]"; None if malformed.
    end = p.find(b".]", i + 1)
    return None if end != i + 2 else (p[i + 1], end + 2)


def bracket(p: bytes, i: int, ch: int) -> int:
    """glibc's lazy bracket scan, from just after the '['.

    Returns the index after ']' when ``ch`` is accepted, -1 when refused or
    malformed, LITERAL when unterminated ('[' is then an ordinary char).
    """
    negate = _at(p, i) in b"!^"
    i += negate
    c = _at(p, i)
    i += 1
    while True:
        low = -1  # set when this element may start a range
        plain = False
        if c == _ESC:
            if not _at(p, i):
                return -1
            c, plain = _at(p, i), True
            i += 1
        elif c == _OPEN and _at(p, i) == _COLON:
            named = _class_name(p, i)
            if named is None:
                plain = True
            else:
                name, i = named
                if i < 0 or name not in _CLASSES:
                    return -1
                if ch in _CLASSES[name]:
                    return _skip_bracket(p, i, negate)
                c = _at(p, i)
                i += 1
        elif c == _OPEN and _at(p, i) == _EQUAL:
            if not (_at(p, i + 1) and _at(p, i + 2) == _EQUAL and _at(p, i + 3) == _CLOSE):
                plain = True
            elif ch == p[i + 1]:
                return _skip_bracket(p, i + 4, negate)
            else:
                c = _at(p, i + 4)
                i += 5
        elif not c:
            return LITERAL
        elif c == _OPEN and _at(p, i) == _DOT:
            sym = _collating(p, i)
            if sym is None:
                return -1
            low, i = sym
            if ch == low and not (_at(p, i) == _DASH and _at(p, i + 1)):
                return _skip_bracket(p, i, negate)
            c = _at(p, i)
            i += 1
        else:
            plain = True
        if plain:
            is_range = _at(p, i) == _DASH and _at(p, i + 1) not in (0, _CLOSE)
            if ch == c and not is_range:
                return _skip_bracket(p, i, negate)
            low, c = c, _at(p, i)
            i += 1
        if low >= 0 and c == _DASH and _at(p, i) != _CLOSE:
            high = _at(p, i)
            i += 1
            if high == _OPEN and _at(p, i) == _DOT:
                sym = _collating(p, i)
                if sym is None:
                    return -1
                high, i = sym
            else:
                if high == _ESC:
                    high = _at(p, i)
                    i += 1
                if not high:
                    return -1
            if low <= ch <= high:
                return _skip_bracket(p, i, negate)
            c = _at(p, i)
            i += 1
        if c == _CLOSE:
            return i if negate else -1


def _skip_bracket(p: bytes, i: int, negate: bool) -> int:
    # ch matched an element: find the closing ']' with glibc's own (slightly
    # different) rules.
    while True:
        c = _at(p, i)
        i += 1
        if c == _CLOSE:
            return -1 if negate else i
        if not c:
            return LITERAL
        if c == _ESC:
            if not _at(p, i):
                return -1
            i += 1
        elif c == _OPEN and _at(p, i) == _COLON:
            start, count = i, 0
            while True:
                i += 1
                count += 1
                if count == _CLASS_MAX:
                    return -1
                if _at(p, i) == _COLON and _at(p, i + 1) == _CLOSE:
                    i += 2
                    break
                if not 0x61 <= _at(p, i) < 0x7A:
                    i = start
                    break
        elif c == _OPEN and _at(p, i) == _EQUAL:
            if not _at(p, i + 1) or _at(p, i + 2) != _EQUAL or _at(p, i + 3) != _CLOSE:
                return -1
            i += 4
        elif c == _OPEN and _at(p, i) == _DOT:
            end = p.find(b".]", i + 1)
            if end < 0:
                return -1
            i = end + 2
