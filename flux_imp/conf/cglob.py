"""glob(3) with GLOB_ERR and fnmatch(3), as glibc does them.

Python's glob and fnmatch differ from glibc (error handling, bracket
expressions, escapes); config loading and ``run``'s environment patterns
must match what the C IMP matches, so both are reimplemented here.
"""

from __future__ import annotations

import errno
import posix

from ..fs import is_dir


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class ReadError(Exception):
    """glob(3) with GLOB_ERR aborted: a directory could not be read."""


def glob(pattern: str) -> list[str]:
    """glob(pattern, GLOB_ERR) sorted as in the C locale; ReadError on abort."""
    return sorted(_expand(pattern), key=_b)


def fnmatch(pattern: str, string: str) -> bool:
    """fnmatch(3) with flags 0."""
    return _fnmatch(_b(pattern), _b(string))


# glibc's pattern classes: a backslash or an unclosed '[' makes a final
# component worth a directory scan, only ? * or [...] make a directory
# component worth globbing.
_SPECIAL, _BACKSLASH, _BRACKET = 1, 2, 4


def _pattern_type(pattern: str) -> int:
    kind, i = 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c in "?*":
            return _SPECIAL
        if c == "\\":
            i += 1
            kind |= _BACKSLASH
        elif c == "[":
            kind |= _BRACKET
        elif c == "]" and kind & _BRACKET:
            return _SPECIAL
        i += 1
    return kind


def _join(directory: str, name: str) -> str:
    if not directory:
        return name
    return f"/{name}" if directory == "/" else f"{directory}/{name}"


def _expand(pattern: str) -> list[str]:
    """glob(pattern, GLOB_ERR) without sorting; ReadError for GLOB_ABORTED."""
    if not pattern:
        return []
    slash = pattern.rfind("/")
    if slash < 0:
        directory, name = "", pattern
    else:
        directory, name = pattern[:slash] or "/", pattern[slash + 1 :]
    if not name and slash > 1:
        # "pattern/": the matches of "pattern", directories marked with '/'.
        return [p + "/" if is_dir(p) else p for p in _expand(directory)]
    if _pattern_type(directory) == _SPECIAL:
        # Only directories (or links to them) can hold further matches.
        directories = [d for d in _expand(directory) if is_dir(d)]
    else:
        directories = [_unescape(directory)]
    return [_join(d, n) for d in directories for n in _match_in(d, name)]


def _unescape(text: str) -> str:
    """Drop each backslash, keeping the character after it as it is: what
    ``re.sub(r"[backslash](.?)", r"[group 1]", text)`` did, without re (whose
    import costs every IMP command start-up time)."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            i += 1  # the backslash goes; what it escapes (if anything) stays
        if i < len(text):
            out.append(text[i])
        i += 1
    return "".join(out)


def _match_in(directory: str, name: str) -> list[str]:
    if _pattern_type(name) == 0:
        # Nothing to match: the name is there (even as a dangling link) or not.
        try:
            posix.lstat(_join(directory or ".", name))
        except OSError:
            return []
        return [name]
    try:
        # readdir(3) also returns "." and "..", which ".*" matches.
        entries = [".", "..", *posix.listdir(directory or ".")]
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return []
        raise ReadError from None
    pat = _b(name)
    return [e for e in entries if _fnmatch(pat, _b(e), period=True)]


_STAR, _QUERY, _ESC, _OPEN, _CLOSE, _DOT, _DASH, _COLON, _EQUAL = b"*?\\[].-:="
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
_LITERAL = -2


def _fnmatch(pattern: bytes, string: bytes, *, period: bool = False) -> bool:
    """glibc fnmatch() == 0 with flags 0 (or FNM_PERIOD), in the "C" locale.

    Works on bytes, as glibc does when MB_CUR_MAX is 1: '?' is one byte and
    ranges compare byte values; [=c=] and [.c.] name one character, as the
    "C" locale allows.  Assumes POSIXLY_CORRECT is unset (then "[^" negates
    like "[!"); FNM_EXTMATCH and the other flags are not supported.
    """
    pattern = pattern.split(b"\0", 1)[0]
    string = string.split(b"\0", 1)[0]
    pi = si = 0
    star_pi = star_si = -1
    while True:
        if pi < len(pattern) and pattern[pi] == _STAR:
            if period and si == 0 and string[:1] == b".":
                return False
            while pi < len(pattern) and pattern[pi] == _STAR:
                pi += 1
            star_pi, star_si = pi, si
            continue
        if pi == len(pattern) and si == len(string):
            return True
        nxt = -1
        if pi < len(pattern) and si < len(string):
            nxt = _match_one(pattern, pi, string[si], period and si == 0)
        if nxt >= 0:
            pi, si = nxt, si + 1
            continue
        # Only the latest star backtracks: glibc settles an earlier star for
        # good once the text up to the next star has matched.
        if star_pi < 0 or star_si >= len(string):
            return False
        star_si += 1
        pi, si = star_pi, star_si


def _match_one(p: bytes, pi: int, ch: int, leading_period: bool) -> int:
    """Match one pattern element at ``p[pi]``; the next index, or -1."""
    c = p[pi]
    if c in (_QUERY, _OPEN) and leading_period and ch == _DOT:
        return -1
    if c == _QUERY:
        return pi + 1
    if c == _ESC:  # a trailing backslash matches nothing
        return pi + 2 if pi + 1 < len(p) and p[pi + 1] == ch else -1
    if c == _OPEN:
        end = _bracket(p, pi + 1, ch)
        if end != _LITERAL:
            return end
    return pi + 1 if c == ch else -1


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


def _bracket(p: bytes, i: int, ch: int) -> int:
    """glibc's lazy bracket scan, from just after the '['.

    Returns the index after ']' when ``ch`` is accepted, -1 when refused or
    malformed, _LITERAL when unterminated ('[' is then an ordinary char).
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
            return _LITERAL
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
            return _LITERAL
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
