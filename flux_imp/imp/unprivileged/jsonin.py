"""The exec input ``{"J": "...", "options": {...}}``, read as upstream reads it.

Upstream parses with jansson (``json_loadf``, flags 0) and unpacks
``{s:s s?o}``; callers see jansson's error text in ``exec: invalid json
input: <text>``.  Python's ``json`` accepts other documents (NaN, huge
integers, ``\\u0000``, lone surrogates, ...) and words errors differently,
so this is a small port of jansson 2.14's lexer and parser behaviour
(``src/load.c``, ``src/pack_unpack.c``): the same documents are accepted,
the same are rejected, and the first error is worded as jansson words it,
including its ``near '<token>'`` context.  Quirks kept on purpose:

* a NUL byte right after a number or a keyword is skipped (jansson's
  one-byte push-back loses it), so ``{"a":1\\0}`` is accepted;
* the context is the current token's text as a C string (cut at a NUL)
  and only if it is at most 20 bytes long;
* objects keep the last value of a duplicate key; nesting is limited to
  2048 levels.

Unlike ``json_loadf`` we parse bytes already read to EOF (the caller reads
them), so an invalid document is reported only once its writer closes.
Input over :data:`MAX_INPUT` bytes is refused before parsing (not upstream).
"""

from __future__ import annotations

# The exec child parses its input here: enum, dataclasses and typing would
# cost it milliseconds of start-up, so the types below are for mypy only.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    import enum
    from typing import Dict, List, NoReturn, Tuple, Union

    Json = Union[Dict[str, "Json"], List["Json"], str, int, float, bool, None]

# Not upstream: the most input read and parsed.  Twice the privsep message
# limit (4 MiB, upstream's too): any J that can reach the privileged half
# fits (signed jobspecs with embedded files approach that limit), and one
# just too large for it still gets upstream's "failed to communicate".
MAX_INPUT = 8 * 1024 * 1024
TOO_LARGE = f"input too large (more than {MAX_INPUT} bytes)"
_EOF = -1  # stream end, as fgetc's EOF
_MAX_DEPTH = 2048  # JSON_PARSER_MAX_DEPTH
_MAX_CONTEXT = 20  # longest token text quoted in an error
_INT64 = 2**63

# Tokens: structural characters stand for themselves (their byte value).
_TOK_EOF, _TOK_INVALID = 0, -1
_TOK_STRING, _TOK_INTEGER, _TOK_REAL, _TOK_TRUE, _TOK_FALSE, _TOK_NULL = range(256, 262)
_KEYWORDS = {b"true": _TOK_TRUE, b"false": _TOK_FALSE, b"null": _TOK_NULL}
# Bytes a string takes as they are, printable ASCII but '"' and '\\', mapped
# to "a" and the rest to "!": a table for bytes.translate.
_PLAIN = bytes(0x61 if 0x20 <= b <= 0x7F and b not in (0x22, 0x5C) else 0x21
               for b in range(256))
_SIMPLE_ESCAPES = {ord('"'): 0x22, ord("\\"): 0x5C, ord("/"): 0x2F, ord("b"): 0x08,
                   ord("f"): 0x0C, ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09}


class JsonInputError(Exception):
    """Invalid input; ``text`` is jansson's error text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# Sentinels: for mypy, enums of one member (so that ``is ABSENT`` narrows a
# type); at run time, plain singletons with the same repr.
if TYPE_CHECKING:

    class Absent(enum.Enum):
        """``options`` was not given (distinct from an explicit JSON null)."""

        ABSENT = 0

    class _Opened(enum.Enum):
        OPENED = 0  # a container was opened and pushed

else:

    class Absent:
        """``options`` was not given (distinct from an explicit JSON null)."""

        __slots__ = ()

        def __repr__(self) -> str:
            return "<Absent.ABSENT: 0>"

    class _Opened:
        __slots__ = ()

        def __repr__(self) -> str:
            return "<_Opened.OPENED: 0>"

    Absent.ABSENT = Absent()
    _Opened.OPENED = _Opened()  # a container was opened and pushed

ABSENT = Absent.ABSENT


class ExecInput(tuple["str", "Json | Absent"]):
    """The unpacked input: a named tuple (``J, options``) without typing.
    ``J`` is the RFC 15 name; ``options`` any JSON value (options.py judges it)."""

    __slots__ = ()

    def __new__(cls, J: str, options: Json | Absent) -> ExecInput:
        return tuple.__new__(cls, (J, options))

    @property
    def J(self) -> str:
        return self[0]

    @property
    def options(self) -> Json | Absent:
        return self[1]

    def __repr__(self) -> str:
        return f"ExecInput(J={self.J!r}, options={self.options!r})"


def parse(data: bytes) -> ExecInput:
    """Parse and unpack ``data``; :class:`JsonInputError` with jansson's text."""
    if len(data) > MAX_INPUT:
        raise JsonInputError(TOO_LARGE)
    root = _Parser(data).document()
    if not isinstance(root, dict):
        raise JsonInputError(f"Expected object, got {type_name(root)}")
    if "J" not in root:
        raise JsonInputError("Object item not found: J")
    token = root["J"]
    if not isinstance(token, str):
        raise JsonInputError(f"Expected string, got {type_name(token)}")
    return ExecInput(token, root.get("options", ABSENT))


def type_name(value: Json) -> str:
    """jansson's name for the type of ``value`` (as in "Expected ..., got <name>")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    names = {dict: "object", list: "array", str: "string", int: "integer", float: "real"}
    return names[type(value)]


def _is_digit(c: int) -> bool:
    return 0x30 <= c <= 0x39


def _is_alpha(c: int) -> bool:
    return 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def _is_xdigit(c: int) -> bool:
    return _is_digit(c) or 0x41 <= c <= 0x46 or 0x61 <= c <= 0x66


def _utf8_length(lead: int) -> int:
    """Bytes in the sequence starting with ``lead``; 0 if it cannot start one."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _utf8_valid(seq: list[int]) -> bool:
    """A whole sequence: continuation bytes, no overlong form, no surrogate."""
    value = seq[0] & (0x1F, 0x0F, 0x07)[len(seq) - 2]
    for byte in seq[1:]:
        if not 0x80 <= byte <= 0xBF:
            return False
        value = (value << 6) | (byte & 0x3F)
    minimum = (0x80, 0x800, 0x10000)[len(seq) - 2]
    return minimum <= value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF


if TYPE_CHECKING:
    # An open container and, for an object, the key its next value goes to.
    _Open = Tuple[Union[Dict[str, Json], List[Json]], str]


class _Parser:
    """jansson's stream, lexer and parser in one; raises at the first error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.plain = data.translate(_PLAIN)  # "!" where a string's byte needs a look
        self.pos = 0
        # jansson reads one UTF-8 sequence at a time into a 0-terminated
        # buffer; a byte pushed back is found there again, except NUL.
        self.buf = [0] * 6
        self.bpos = 0
        self.utf8_error = False
        self.saved = bytearray()  # the current token's text
        self.token = _TOK_INVALID
        self.value: Json = None

    # -- errors -------------------------------------------------------------
    def fail(self, message: str) -> NoReturn:
        text = bytes(self.saved).split(b"\0", 1)[0]
        if text:
            if len(self.saved) <= _MAX_CONTEXT:
                message += f" near '{text.decode('utf-8', 'surrogateescape')}'"
        elif not self.utf8_error:
            message += " near end of file"
        raise JsonInputError(message)

    # -- stream -------------------------------------------------------------
    def _read_byte(self) -> int:
        if self.pos >= len(self.data):
            return _EOF
        self.pos += 1
        return self.data[self.pos - 1]

    def get(self) -> int:
        if not self.buf[self.bpos]:
            c = self._read_byte()
            if c == _EOF:
                return _EOF
            self.buf[0], self.buf[1], self.bpos = c, 0, 0
            count = _utf8_length(c)
            if count > 1:
                # A missing byte reads as 0xFF (EOF stored in a char).
                seq = [c] + [self._read_byte() & 0xFF for _ in range(count - 1)]
                if not _utf8_valid(seq):
                    count = 0
                self.buf[: len(seq)] = seq
                self.buf[len(seq)] = 0
            if count == 0:
                self.utf8_error = True
                self.fail(f"unable to decode byte 0x{c:x}")
        c = self.buf[self.bpos]
        self.bpos += 1
        return c

    def unget(self, c: int) -> None:
        if c != _EOF:
            self.bpos -= 1

    def get_save(self) -> int:
        c = self.get()
        if c != _EOF:
            self.saved.append(c)
        return c

    def unget_unsave(self, c: int) -> None:
        if c != _EOF:
            self.unget(c)
            self.saved.pop()

    # -- lexer ----------------------------------------------------------------
    def scan(self) -> int:
        self.saved.clear()
        c = self.get()
        while c in (0x20, 0x09, 0x0A, 0x0D):
            c = self.get()
        if c == _EOF:
            self.token = _TOK_EOF
            return self.token
        self.saved.append(c)
        if c in b"{}[]:,":
            self.token = c
        elif c == 0x22:
            self.token = self._scan_string()
        elif _is_digit(c) or c == 0x2D:
            self.token = self._scan_number(c)
        elif _is_alpha(c):
            while _is_alpha(c):
                c = self.get_save()
            self.unget_unsave(c)
            self.token = _KEYWORDS.get(bytes(self.saved), _TOK_INVALID)
        else:
            while self.buf[self.bpos]:  # the rest of a UTF-8 sequence, for the message
                self.saved.append(self.buf[self.bpos])
                self.bpos += 1
            self.token = _TOK_INVALID
        return self.token

    def _skip_plain(self) -> None:
        """Take the run of plain bytes (_PLAIN) at the read position at once,
        as get_save() would one by one (2 us a byte here: 20 ms for a 10 kB J)."""
        if self.buf[self.bpos]:
            return  # a sequence read ahead comes first
        end = self.plain.find(b"!", self.pos)
        if end < 0:
            end = len(self.data)
        self.saved += self.data[self.pos : end]
        self.pos = end

    def _scan_string(self) -> int:
        self._skip_plain()
        c = self.get_save()
        while c != 0x22:
            if c == _EOF:
                self.fail("premature end of input")
            if c <= 0x1F:
                self.unget_unsave(c)
                self.fail("unexpected newline" if c == 0x0A else f"control character 0x{c:x}")
            if c == 0x5C:
                c = self.get_save()
                if c == ord("u"):
                    c = self.get_save()
                    for _ in range(4):
                        if not _is_xdigit(c):
                            self.fail("invalid escape")
                        c = self.get_save()
                elif c in _SIMPLE_ESCAPES:
                    c = self.get_save()
                else:
                    self.fail("invalid escape")
            else:
                self._skip_plain()
                c = self.get_save()
        self.value = self._unescape(bytes(self.saved[1:-1]))
        return _TOK_STRING

    def _unescape(self, raw: bytes) -> str:
        out = bytearray()
        i = 0
        while i < len(raw):
            escape = raw.find(b"\\", i)  # the bytes up to it are taken as they are
            if escape < 0:
                out += raw[i:]
                break
            out += raw[i:escape]
            i = escape
            if raw[i + 1] != ord("u"):
                out.append(_SIMPLE_ESCAPES[raw[i + 1]])
                i += 2
                continue
            value = int(raw[i + 2 : i + 6], 16)
            i += 6
            if 0xD800 <= value <= 0xDBFF:
                if raw[i : i + 2] != b"\\u":
                    self.fail(f"invalid Unicode '\\u{value:04X}'")
                low = int(raw[i + 2 : i + 6], 16)
                i += 6
                if not 0xDC00 <= low <= 0xDFFF:
                    self.fail(f"invalid Unicode '\\u{value:04X}\\u{low:04X}'")
                value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
            elif 0xDC00 <= value <= 0xDFFF:
                self.fail(f"invalid Unicode '\\u{value:04X}'")
            out += chr(value).encode("utf-8")
        return out.decode("utf-8")

    def _scan_number(self, c: int) -> int:
        if c == 0x2D:
            c = self.get_save()
        if c == 0x30:
            c = self.get_save()
            if _is_digit(c):
                self.unget_unsave(c)
                return _TOK_INVALID
        elif _is_digit(c):
            while _is_digit(c):
                c = self.get_save()
        else:
            self.unget_unsave(c)
            return _TOK_INVALID
        if c not in (0x2E, 0x45, 0x65):
            self.unget_unsave(c)
            negative = self.saved[0] == 0x2D
            # JSON has no leading zeros, so over 19 digits is out of range:
            # known before int(), which refuses over 4300 digits.
            value = int(self.saved) if len(self.saved) - negative <= 19 else None
            if value is None or not -_INT64 <= value < _INT64:
                self.fail("too big negative integer" if negative else "too big integer")
            self.value = value
            return _TOK_INTEGER
        if c == 0x2E:
            c = self.get()
            if not _is_digit(c):
                self.unget(c)
                return _TOK_INVALID
            self.saved.append(c)
            while _is_digit(c):
                c = self.get_save()
        if c in (0x45, 0x65):
            c = self.get_save()
            if c in (0x2B, 0x2D):
                c = self.get_save()
            if not _is_digit(c):
                self.unget_unsave(c)
                return _TOK_INVALID
            while _is_digit(c):
                c = self.get_save()
        self.unget_unsave(c)
        real = float(self.saved)
        if real in (float("inf"), float("-inf")):
            self.fail("real number overflow")
        self.value = real
        return _TOK_REAL

    # -- parser ---------------------------------------------------------------
    def document(self) -> Json:
        if self.scan() not in (ord("["), ord("{")):
            self.fail("'[' or '{' expected")
        value = self._value()
        if self.scan() != _TOK_EOF:
            self.fail("end of file expected")
        return value

    def _object_key(self) -> str:
        """At a key token: check it and the ':', leave the value's token current."""
        if self.token != _TOK_STRING:
            self.fail("string or '}' expected")
        key = self.value
        assert isinstance(key, str)
        if "\0" in key:
            self.fail("NUL byte in object key not supported")
        if self.scan() != ord(":"):
            self.fail("':' expected")
        self.scan()
        return key

    def _value(self) -> Json:
        """parse_value() without recursion: open containers live on ``stack``."""
        stack: list[_Open] = []
        while True:
            if len(stack) + 1 > _MAX_DEPTH:
                self.fail("maximum parsing depth reached")
            value = self._scalar_or_open(stack)
            if value is _Opened.OPENED:
                continue  # the new container's first member is the current token
            while stack:  # attach the finished value, then close what it completes
                container, key = stack[-1]
                if isinstance(container, dict):
                    container[key] = value
                else:
                    container.append(value)
                if self.scan() == ord(","):
                    self.scan()
                    if isinstance(container, dict):
                        stack[-1] = (container, self._object_key())
                    elif self.token == _TOK_EOF:
                        self.fail("']' expected")
                    break
                close = ord("}") if isinstance(container, dict) else ord("]")
                if self.token != close:
                    self.fail(f"'{chr(close)}' expected")
                value = stack.pop()[0]
            else:
                return value

    def _scalar_or_open(self, stack: list[_Open]) -> Json | _Opened:
        """The current token's value, an empty container, or OPENED (pushed)."""
        token = self.token
        if token == _TOK_STRING:
            assert isinstance(self.value, str)
            if "\0" in self.value:
                self.fail("\\u0000 is not allowed without JSON_ALLOW_NUL")
            return self.value
        if token in (_TOK_INTEGER, _TOK_REAL):
            return self.value
        if token in (_TOK_TRUE, _TOK_FALSE, _TOK_NULL):
            return {_TOK_TRUE: True, _TOK_FALSE: False, _TOK_NULL: None}[token]
        if token == ord("{"):
            obj: dict[str, Json] = {}
            if self.scan() == ord("}"):
                return obj
            stack.append((obj, self._object_key()))
            return _Opened.OPENED
        if token == ord("["):
            arr: list[Json] = []
            if self.scan() == ord("]"):
                return arr
            if self.token == _TOK_EOF:
                self.fail("']' expected")
            stack.append((arr, ""))
            return _Opened.OPENED
        self.fail("invalid token" if token == _TOK_INVALID else "unexpected token")

