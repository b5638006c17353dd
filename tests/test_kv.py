"""RFC 38 kv codec: vectors, decode rules and lookup semantics."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_imp.sign.kv import KV, KVError
from flux_imp.sign.timestamp import format_time, parse_time

RFC38_VECTORS = [
    (b"PATH\0s/bin:/usr/bin\0", "PATH", "s", "/bin:/usr/bin"),
    (b"EMPTY_STRING\0s\0", "EMPTY_STRING", "s", ""),
    (b"INT_MINUS\0i-42\0", "INT_MINUS", "i", -42),
    (b"INT64_MIN\0i-9223372036854775808\0", "INT64_MIN", "i", -(2**63)),
    (b"DOUBLE\0d3.000000\0", "DOUBLE", "d", 3.0),
    (b"DOUBLE_INF\0dinf\0", "DOUBLE_INF", "d", float("inf")),
    (b"DBL_MIN\0d0.000000\0", "DBL_MIN", "d", 2.2250738585072014e-308),
    (b"FALSE\0bfalse\0", "FALSE", "b", False),
    (b"TIMESTAMP\0t2023-08-18T14:59:45Z\0", "TIMESTAMP", "t", 1692370785),
]


def _put(kv: KV, key: str, typ: str, val: object) -> None:
    if typ == "s":
        kv.put_str(key, str(val))
    elif typ == "i":
        assert isinstance(val, int)
        kv.put_int(key, val)
    elif typ == "d":
        assert isinstance(val, float)
        kv.put_double(key, val)
    elif typ == "b":
        kv.put_bool(key, bool(val))
    else:
        assert isinstance(val, int)
        kv.put_time(key, val)


def _get(kv: KV, key: str, typ: str) -> object:
    getters = {"s": kv.get_str, "i": kv.get_int, "d": kv.get_double,
               "b": kv.get_bool, "t": kv.get_time}
    return getters[typ](key)


@pytest.mark.parametrize("wire,key,typ,val", RFC38_VECTORS)
def test_rfc38_vector_encodes_to_wire_bytes(wire: bytes, key: str, typ: str, val: object) -> None:
    kv = KV()
    _put(kv, key, typ, val)
    assert kv.encode() == wire


@pytest.mark.parametrize("wire,key,typ,val", RFC38_VECTORS)
def test_rfc38_vector_decodes_to_value(wire: bytes, key: str, typ: str, val: object) -> None:
    kv = KV.decode(wire)
    got = _get(kv, key, typ)
    if key == "DBL_MIN":
        assert got == 0.0  # %.6f of DBL_MIN is 0.000000
    else:
        assert got == val


def test_empty_buffer_is_empty_object() -> None:
    assert len(KV.decode(b"")) == 0
    assert KV().encode() == b""


@pytest.mark.parametrize(
    "buf",
    [b"a\0sx", b"a\0sx\0b\0", b"\0sx\0", b"a\0\0", b"a\0xv\0", b"a\0sv\0\0"],
    ids=["unterminated", "odd-nuls", "empty-key", "no-type", "bad-type", "trailing-nul"],
)
def test_decode_rejects_malformed(buf: bytes) -> None:
    with pytest.raises(KVError):
        KV.decode(buf)


def test_empty_values_follow_upstream_get_rules() -> None:
    kv = KV.decode(b"i\0i\0d\0d\0b\0b\0t\0t\0")
    assert kv.get_int("i") is None
    assert kv.get_double("d") is None
    assert kv.get_bool("b") is False
    assert kv.get_time("t") == 0


def test_lookup_sees_only_first_entry_even_if_type_differs() -> None:
    kv = KV.decode(b"k\0sone\0k\0i2\0")
    assert kv.get_str("k") == "one"
    assert kv.get_int("k") is None


def test_put_moves_existing_key_to_end() -> None:
    kv = KV()
    kv.put_str("a", "1")
    kv.put_str("b", "2")
    kv.put_str("a", "3")
    assert kv.encode() == b"b\0s2\0a\0s3\0"


@pytest.mark.parametrize(
    "text,val",
    [(b" 42", 42), (b"+7", 7), (b"-0", 0), (b"9223372036854775808", None),
     (b"1_000", None), (b"\xd9\xa3", None), (b"12 ", None), (b"", None), (b"0x10", None)],
)
def test_int_parsing_is_strtoll(text: bytes, val: int | None) -> None:
    assert KV.decode(b"k\0i" + text + b"\0").get_int("k") == val


@pytest.mark.parametrize(
    "text,val", [(b"true", True), (b"false", False), (b"", False), (b"no", True)]
)
def test_bool_parsing(text: bytes, val: bool) -> None:
    assert KV.decode(b"k\0b" + text + b"\0").get_bool("k") is val


@pytest.mark.parametrize(
    "text,val",
    [
        ("2023-08-18T14:59:45Z", 1692370785),
        ("2023-8-18T14:59:45Z", 1692370785),
        (" 2023-08-18T 14:59:45Z", 1692370785),
        ("2023-02-31T00:00:00Z", 1677801600),  # normalised to Mar 3
        ("2023-08-18T14:59:45Zjunk", 1692370785),
        ("2023-08-18t14:59:45Z", None),
        ("1969-12-31T23:59:59Z", None),
        ("2023-13-01T00:00:00Z", None),
        ("garbage", None),
    ],
)
def test_timestamp_parse_like_glibc(text: str, val: int | None) -> None:
    assert parse_time(text) == val


def test_unparseable_timestamp_reads_as_zero() -> None:
    assert KV.decode(b"t\0tnope\0").get_time("t") == 0


def test_timestamp_format_and_negative_refused() -> None:
    assert format_time(1692370785) == "2023-08-18T14:59:45Z"
    with pytest.raises(KVError):
        KV().put_time("t", -1)


def test_join_and_split_with_prefix() -> None:
    inner = KV()
    inner.put_str("x", "1")
    inner.put_int("y", 2)
    outer = KV()
    outer.put_str("other", "z")
    outer.join(inner, "cert")
    assert outer.keys() == ["other", "certx", "certy"]
    back = outer.split("cert")
    assert back == inner
    outer.put_str("cert", "exact prefix is not included")
    assert outer.split("cert") == inner


def test_split_collapses_duplicates_to_last() -> None:
    kv = KV.decode(b"p.a\0s1\0p.b\0s2\0p.a\0s3\0")
    assert kv.split("p.").encode() == b"b\0s2\0a\0s3\0"


@given(st.binary(max_size=200))
def test_decode_raises_only_kverror(buf: bytes) -> None:
    try:
        kv = KV.decode(buf)
    except KVError:
        return
    assert kv.encode() == buf
    for key, typ, _ in kv.items():
        _get(kv, key, typ)


def test_double_encoding_is_printf() -> None:
    kv = KV()
    kv.put_double("a", -float("nan"))
    kv.put_double("b", 0.1)
    kv.put_double("c", -float("inf"))
    assert kv.encode() == b"a\0d-nan\0b\0d0.100000\0c\0d-inf\0"


# -- bounded work (issue 9): linear in the number of entries --------------------------


def _line_events(work: Callable[[int], object], n: int) -> int:
    """Python lines of kv.py run by ``work(n)``: a count, not a time."""
    import flux_imp.sign.kv as kv_module

    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        nonlocal count
        if frame.f_code.co_filename != kv_module.__file__:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        work(n)
    finally:
        sys.settrace(None)
    return count


def _many_entries(n: int) -> None:
    kv = KV()
    for i in range(n):
        kv.put_str(f"k{i}", "v")
    kv.put_str("k0", "moved")  # a put that replaces
    back = KV.decode(kv.encode())
    outer = KV()
    outer.join(back, "meta.")
    assert outer.split("meta.") == back
    assert back.get_str("k0") == "moved"


def test_kv_work_is_linear_in_entries() -> None:
    # Doubling the entries doubles the lines run (quadratic: 4x).
    small, large = _line_events(_many_entries, 1000), _line_events(_many_entries, 2000)
    assert large < 2.2 * small


def test_kv_of_200000_entries_encodes_and_decodes_promptly() -> None:
    # About 2 s here; the quadratic kv needed about an hour.  The deadline is
    # checked as it goes, so a slow kv fails in seconds, not after the hour.
    deadline = time.monotonic() + 30
    kv = KV()
    for i in range(200_000):
        kv.put_str(f"key{i}", "value")
        if i % 1000 == 0:
            assert time.monotonic() < deadline
    back = KV.decode(kv.encode())
    assert len(back) == 200_000 and back.get_str("key199999") == "value"
    cert = KV()
    cert.join(back, "meta.")
    assert cert.split("meta.").encode() == back.encode()
    assert time.monotonic() < deadline


def test_int_parsing_of_long_texts() -> None:
    # int() refuses over 4300 digits: strtoll's answer without it.
    for text, val in [(b"1" * 5000, None), (b"-" + b"9" * 5000, None),
                      (b"0" * 5000 + b"42", 42), (b" -" + b"0" * 5000 + b"7", -7)]:
        assert KV.decode(b"k\0i" + text + b"\0").get_int("k") == val


class _ModelKV:
    """The obvious (quadratic) kv: upstream's semantics on a list."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def delete(self, key: str) -> bool:
        for i, (k, _) in enumerate(self.entries):
            if k == key:
                del self.entries[i]
                return True
        return False

    def put(self, key: str, val: str) -> None:
        self.delete(key)
        self.entries.append((key, val))

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.entries if k == key), None)


_KEYS = st.sampled_from(["a", "b", "c"])


@given(st.lists(st.tuples(_KEYS, _KEYS), max_size=6),
       st.lists(st.tuples(st.sampled_from(["put", "delete", "get"]), _KEYS,
                          st.text(alphabet="xyz", max_size=2)), max_size=30))
def test_kv_agrees_with_the_list_model(start: list[tuple[str, str]],
                                       ops: list[tuple[str, str, str]]) -> None:
    # Duplicates (which only decode makes) included: puts and deletes take
    # the first entry of a key, gets see it.
    wire = b"".join(k.encode() + b"\0s" + v.encode() + b"\0" for k, v in start)
    kv, model = KV.decode(wire), _ModelKV()
    model.entries = list(start)
    for op, key, val in ops:
        if op == "put":
            kv.put_str(key, val)
            model.put(key, val)
        elif op == "delete":
            assert kv.delete(key) == model.delete(key)
        else:
            assert kv.get_str(key) == model.get(key)
        assert [(k, raw.decode()) for k, _, raw in kv.items()] == model.entries
        assert len(kv) == len(model.entries)
    assert kv.copy().encode() == kv.encode()
