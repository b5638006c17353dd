"""glob(3) with GLOB_ERR and fnmatch(3), as glibc does them.

Python's glob and fnmatch differ from glibc (error handling, bracket
expressions, escapes); config loading and ``run``'s environment patterns
must match what the C IMP matches, so both are reimplemented here
(bracket expressions in cbracket.py, loaded only for a pattern with one).
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


_STAR, _QUERY, _ESC, _OPEN, _DOT = b"*?\\[."
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
        from .cbracket import LITERAL, bracket  # only a pattern with '[' needs it

        end = bracket(p, pi + 1, ch)
        if end != LITERAL:
            return end
    return pi + 1 if c == ch else -1
