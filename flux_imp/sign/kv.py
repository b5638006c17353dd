"""RFC 38 key-value encoding, byte-compatible with flux-security's kv.

An object is a sequence of ``KEY NUL T VALUE NUL`` entries.  Order is kept
(it feeds signatures), lookups see only the first entry with a key, and a
put replaces by deleting the old entry and appending the new one.  Keys and
values are bytes on the wire; this API speaks ``str`` and maps bytes
through UTF-8 with surrogateescape, so any input round-trips exactly.
"""

from __future__ import annotations

# Every IMP command imports this module, and most never handle a double or
# a timestamp: re, math and the timestamp code are imported on use (and
# typing/collections not at all), to keep start-up fast.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

STRING, INT64, DOUBLE, BOOL, TIMESTAMP = "s", "i", "d", "b", "t"
_TYPES = frozenset(b"sidbt")

_SPACE = b" \t\n\v\f\r"
_DIGITS = frozenset(b"0123456789")
# strtod accepting the whole text: decimal, hex, inf/infinity, nan[(chars)].
_DOUBLE_PATTERN = (
    rb"[ \t\n\v\f\r]*[+-]?("
    rb"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
    rb"|0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)([pP][+-]?[0-9]+)?"
    rb"|[iI][nN][fF]([iI][nN][iI][tT][yY])?"
    rb"|[nN][aA][nN](\([0-9A-Za-z_]*\))?"
    rb")\Z"
)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class KVError(ValueError):
    """Malformed kv bytes or a value that cannot be encoded (EINVAL)."""


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def parse_int64(raw: bytes) -> int | None:
    """strtoll(base 10) accepting the whole text: spaces, optional sign, digits."""
    digits = raw.lstrip(_SPACE)
    sign = digits[:1]
    if sign in (b"+", b"-"):
        digits = digits[1:]
    if not digits or not _DIGITS.issuperset(digits):
        return None
    # Leading zeros dropped and long texts refused before int(): it refuses
    # over 4300 digits and is quadratic below that.  20 digits exceed int64.
    digits = digits.lstrip(b"0") or b"0"
    if len(digits) > 19:
        return None
    val = -int(digits) if sign == b"-" else int(digits)
    return val if _INT64_MIN <= val <= _INT64_MAX else None


def parse_double(raw: bytes) -> float | None:
    import math
    import re  # compiled (and cached by re) on first use

    if not re.match(_DOUBLE_PATTERN, raw):
        return None
    text = raw.strip(_SPACE).decode("ascii")
    lower = text.lower().lstrip("+-")
    try:
        if lower.startswith("0x"):
            val = float.fromhex(text)
        elif lower.startswith("nan"):
            val = math.nan
        else:
            val = float(text)
    except (ValueError, OverflowError):
        return None
    # strtod reports ERANGE on overflow; upstream then fails the get.
    if math.isinf(val) and not lower.startswith("inf"):
        return None
    return val


class KV:
    """An ordered kv object.

    Every operation is O(1) per entry (a hostile 4 MiB message or cert is
    ~1M entries): entries live in a dict by sequence number, which keeps
    wire order and deletes in O(1), and each key's entries form a chain
    (first, next, last) so that lookups and puts never scan.
    """

    __slots__ = ("_entries", "_first", "_last", "_next", "_seq")

    def __init__(self, entries: Iterable[tuple[bytes, bytes, bytes]] = ()) -> None:
        self._entries: dict[int, tuple[bytes, bytes, bytes]] = {}  # seq -> (key, type, value)
        self._first: dict[bytes, int] = {}  # key -> seq of its first entry (what gets see)
        self._last: dict[bytes, int] = {}  # key -> seq of its last entry
        self._next: dict[int, int] = {}  # seq -> seq of the next entry with the same key
        self._seq = 0
        for entry in entries:
            self._append(entry)

    def _append(self, entry: tuple[bytes, bytes, bytes]) -> None:
        seq, key = self._seq, entry[0]
        self._seq = seq + 1
        self._entries[seq] = entry
        last = self._last.get(key)
        if last is None:
            self._first[key] = seq
        else:
            self._next[last] = seq  # a duplicate (only decode makes them)
        self._last[key] = seq

    def _delete(self, bkey: bytes) -> bool:
        seq = self._first.get(bkey)
        if seq is None:
            return False
        del self._entries[seq]
        following = self._next.pop(seq, None)
        if following is None:
            del self._first[bkey], self._last[bkey]
        else:
            self._first[bkey] = following
        return True

    # -- wire format -----------------------------------------------------
    @classmethod
    def decode(cls, buf: bytes) -> KV:
        """Decode, rejecting what upstream's integrity check rejects."""
        if not buf:
            return cls()
        if buf[-1] != 0:
            raise KVError("not NUL terminated")
        fields = buf[:-1].split(b"\0")
        if len(fields) % 2:
            raise KVError("odd number of NUL bytes")
        kv = cls()
        for key, val in zip(fields[::2], fields[1::2]):
            if not key or not val or val[0] not in _TYPES:
                raise KVError("bad entry")
            kv._append((key, val[:1], val[1:]))
        return kv

    def encode(self) -> bytes:
        return b"".join(k + b"\0" + t + v + b"\0" for k, t, v in self._entries.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KV) and self.encode() == other.encode()

    def __hash__(self) -> int:
        return hash(self.encode())

    def __len__(self) -> int:
        return len(self._entries)

    def copy(self) -> KV:
        return KV(self._entries.values())

    # -- iteration -------------------------------------------------------
    def items(self) -> Iterator[tuple[str, str, bytes]]:
        """Yield (key, type char, raw value) in order."""
        for key, typ, val in self._entries.values():
            yield _s(key), typ.decode("ascii"), val

    def keys(self) -> list[str]:
        return [_s(k) for k, _, _ in self._entries.values()]

    # -- put ---------------------------------------------------------------
    def delete(self, key: str) -> bool:
        """Remove the first entry named ``key``; False if there is none."""
        return self._delete(_b(key))

    def put_raw(self, key: str, typ: str, raw: bytes) -> None:
        bkey = _b(key)
        if not bkey or b"\0" in bkey or b"\0" in raw or typ.encode() not in (
            b"s", b"i", b"d", b"b", b"t"
        ):
            raise KVError("invalid key or value")
        self._delete(bkey)
        self._append((bkey, typ.encode("ascii"), raw))

    def put_str(self, key: str, val: str) -> None:
        self.put_raw(key, STRING, _b(val))

    def put_int(self, key: str, val: int) -> None:
        if not _INT64_MIN <= val <= _INT64_MAX:
            raise KVError("int64 out of range")
        self.put_raw(key, INT64, str(val).encode("ascii"))

    def put_double(self, key: str, val: float) -> None:
        import math

        text = "%.6f" % val  # noqa: UP031 - C printf semantics wanted
        if math.isnan(val) and math.copysign(1.0, val) < 0:
            text = "-nan"  # glibc prints the sign of a NaN; Python does not
        self.put_raw(key, DOUBLE, text.encode("ascii"))

    def put_bool(self, key: str, val: bool) -> None:
        self.put_raw(key, BOOL, b"true" if val else b"false")

    def put_time(self, key: str, val: int) -> None:
        from .timestamp import format_time

        try:
            text = format_time(val)
        except (ValueError, OverflowError) as exc:
            raise KVError("timestamp cannot be encoded") from exc
        self.put_raw(key, TIMESTAMP, text.encode("ascii"))

    # -- get: None means "missing", as upstream's failing kv_get -------------
    def find(self, key: str) -> tuple[str, bytes] | None:
        """First entry with ``key`` as (type char, raw value), or None."""
        seq = self._first.get(_b(key))
        if seq is None:
            return None
        _, typ, val = self._entries[seq]
        return typ.decode("ascii"), val

    def _typed(self, key: str, typ: str) -> bytes | None:
        # Only the first entry counts: a type mismatch there is "missing".
        found = self.find(key)
        if found is None or found[0] != typ:
            return None
        return found[1]

    def get_str(self, key: str) -> str | None:
        raw = self._typed(key, STRING)
        return None if raw is None else _s(raw)

    def get_int(self, key: str) -> int | None:
        raw = self._typed(key, INT64)
        return None if raw is None else parse_int64(raw)

    def get_double(self, key: str) -> float | None:
        raw = self._typed(key, DOUBLE)
        return None if raw is None else parse_double(raw)

    def get_bool(self, key: str) -> bool | None:
        raw = self._typed(key, BOOL)
        return None if raw is None else raw not in (b"", b"false")

    def get_time(self, key: str) -> int | None:
        # Unparseable or negative timestamps read as 0, without error.
        raw = self._typed(key, TIMESTAMP)
        if raw is None:
            return None
        from .timestamp import parse_time

        t = parse_time(raw)
        return 0 if t is None else t

    # -- prefixes ------------------------------------------------------------
    def join(self, other: KV, prefix: str) -> None:
        """Put every entry of ``other`` with ``prefix`` prepended to its key."""
        for key, typ, raw in other.items():
            self.put_raw(prefix + key, typ, raw)

    def split(self, prefix: str) -> KV:
        """Entries whose key starts with ``prefix`` (and is longer), stripped."""
        out = KV()
        for key, typ, raw in self.items():
            if len(key) > len(prefix) and key.startswith(prefix):
                out.put_raw(key[len(prefix) :], typ, raw)
        return out
