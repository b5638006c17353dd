"""J layout, unwrap order of checks and messages, the none mechanism."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_imp.sign import NOVERIFY, Context, SignError, unwrap, unwrap_anymech, wrap, wrap_as
from flux_imp.sign.kv import KV

from .signconf import NONE_ONLY, make_context, sign_table

NONE_1000 = "dmVyc2lvbgBpMQBtZWNoYW5pc20Ac25vbmUAdXNlcmlkAGkxMDAwAA=="


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return make_context(tmp_path, NONE_ONLY)


def header(entries: bytes) -> str:
    return base64.b64encode(entries).decode()


def errmsg(ctx: Context, token: str, flags: int = 0) -> str:
    with pytest.raises(SignError) as info:
        unwrap(ctx, token, flags)
    return info.value.text


def test_none_known_answer_for_uid_1000(ctx: Context) -> None:
    assert wrap_as(ctx, 1000, b"hello", "none") == NONE_1000 + ".aGVsbG8=.none"


def test_none_header_has_exactly_three_keys(ctx: Context) -> None:
    token = wrap(ctx, b"x")
    raw = base64.b64decode(token.split(".")[0])
    assert KV.decode(raw).keys() == ["version", "mechanism", "userid"]


def test_none_round_trip_as_real_uid(ctx: Context) -> None:
    got = unwrap(ctx, wrap(ctx, b"hello"))
    assert got == (b"hello", os.getuid(), "none")


def test_empty_payload_round_trip(ctx: Context) -> None:
    token = wrap(ctx, b"")
    assert ".." in token
    assert unwrap(ctx, token).payload == b""


def test_none_other_uid_is_refused_before_signature(ctx: Context) -> None:
    token = wrap_as(ctx, os.getuid() + 1234, b"x", "none")[:-4] + "bogus"
    assert errmsg(ctx, token) == (
        f"sign-none-verify: header userid {os.getuid() + 1234} != real {os.getuid()}"
    )


def test_none_bad_signature(ctx: Context) -> None:
    assert errmsg(ctx, wrap(ctx, b"x") + "\n") == "sign-none-verify: signature invalid"


def test_noverify_never_examines_signature(ctx: Context) -> None:
    token = wrap_as(ctx, 4242, b"p", "none")[:-4] + "garbage.with.dots"
    assert unwrap(ctx, token, NOVERIFY) == (b"p", 4242, "none")


@pytest.mark.parametrize(
    "token,message",
    [
        ("nodots", "sign-unwrap: header decode error: Invalid argument"),
        (".aGVsbG8=.none", "sign-unwrap: header decode error: Invalid argument"),
        (" " + NONE_1000 + ".aGVsbG8=.none",
         "sign-unwrap: header decode error: Invalid argument"),
        ("QR==.x.none", "sign-unwrap: header decode error: Invalid argument"),
        (NONE_1000, "sign-unwrap: header decode error: Invalid argument"),
        (NONE_1000 + ".aGVsbG8=", "sign-unwrap: payload decode error: Invalid argument"),
        (NONE_1000 + ".aGVsbG8.none", "sign-unwrap: payload decode error: Invalid argument"),
        (header(b"mechanism\0snone\0userid\0i0\0") + "..none",
         "sign-unwrap: header version missing"),
        (header(b"version\0s1\0") + "..none", "sign-unwrap: header version missing"),
        (header(b"version\0i2\0") + "..none", "sign-unwrap: header version=2 unknown"),
        (header(b"version\0i4294967297\0") + "..none",
         "sign-unwrap: header version=1 unknown"),
        (header(b"version\0i1\0") + "..none", "sign-unwrap: header mechanism missing"),
        (header(b"version\0i1\0mechanism\0sfoo\0") + "..none",
         "sign-unwrap: header mechanism=foo unknown"),
        (header(b"version\0i1\0mechanism\0smunge\0") + "..none",
         "sign-unwrap: header mechanism=munge not allowed"),
        (header(b"version\0i1\0mechanism\0snone\0") + "..none",
         "sign-unwrap: header userid missing"),
        (header(b"version\0i1\0mechanism\0snone\0userid\0sroot\0") + "..none",
         "sign-unwrap: header userid missing"),
    ],
)
def test_unwrap_errors_in_upstream_order(ctx: Context, token: str, message: str) -> None:
    assert errmsg(ctx, token) == message


def test_anymech_skips_only_the_allowed_types_check(ctx: Context) -> None:
    token = header(b"version\0i1\0mechanism\0smunge\0userid\0i5\0") + ".aGk=.x"
    assert unwrap_anymech(ctx, token, NOVERIFY) == (b"hi", 5, "munge")


def test_unknown_extra_header_keys_are_ignored(ctx: Context) -> None:
    token = header(
        f"version\0i1\0mechanism\0snone\0userid\0i{os.getuid()}\0extra\0sx\0".encode()
    ) + ".aGk=.none"
    assert unwrap(ctx, token).payload == b"hi"


def test_unwrap_flags_other_than_noverify_are_invalid(ctx: Context) -> None:
    assert errmsg(ctx, wrap(ctx, b""), flags=2) == "Invalid argument"


def test_wrap_negative_userid_and_unknown_mechanism(ctx: Context) -> None:
    with pytest.raises(SignError, match=r"^Invalid argument$"):
        wrap_as(ctx, -1, b"", "none")
    with pytest.raises(SignError, match=r"^sign-wrap: unknown mechanism: foo$"):
        wrap(ctx, b"", "foo")


SIGN_CONFIG_ERRORS = [
    ("[other]\nx = 1\n", "configuration object 'sign' not found"),
    ('[sign]\nmax-ttl = 1\ndefault-type = "none"\nallowed-types = ["none"]\nfoo = 1\n',
     "sign: config error: key 'foo' is unknown"),
    ('[sign]\ndefault-type = "none"\nallowed-types = ["none"]\n',
     "sign: config error: 'max-ttl' must be set"),
    ('[sign]\nmax-ttl = "1"\ndefault-type = "none"\nallowed-types = ["none"]\n',
     "sign: config error: 'max-ttl' must be of type int64"),
    ('[sign]\nmax-ttl = 1\nallowed-types = ["none"]\n',
     "sign: config error: 'default-type' must be set"),
    ('[sign]\nmax-ttl = 1\ndefault-type = "none"\n',
     "sign: config error: 'allowed-types' must be set"),
    ('[sign]\nmax-ttl = 0\ndefault-type = "none"\nallowed-types = ["none"]\n',
     "sign: max-ttl should be greater than zero"),
    ('[sign]\nmax-ttl = 1\ndefault-type = "none"\nallowed-types = [["none"]]\n',
     "sign: allowed-types[0] not a string"),
    ('[sign]\nmax-ttl = 1\ndefault-type = "none"\nallowed-types = ["rot13"]\n',
     "sign: unknown mechanism=rot13"),
    ('[sign]\nmax-ttl = 1\ndefault-type = "none"\nallowed-types = []\n',
     "sign: allowed-types array is empty"),
    ('[sign]\nmax-ttl = 1\ndefault-type = "rot13"\nallowed-types = ["none"]\n',
     "No such file or directory"),
]


@pytest.mark.parametrize("toml,message", SIGN_CONFIG_ERRORS)
def test_sign_config_errors_are_lazy_and_exact(tmp_path: Path, toml: str, message: str) -> None:
    ctx = make_context(tmp_path, toml)  # configure itself succeeds
    with pytest.raises(SignError) as info:
        wrap(ctx, b"x")
    assert info.value.text == message
    with pytest.raises(SignError) as again:
        unwrap(ctx, NONE_1000 + ".aGVsbG8=.none")
    assert again.value.text == message


def test_max_ttl_minus_100_is_accepted(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, sign_table("none", max_ttl=-100))
    assert unwrap(ctx, wrap(ctx, b"x")).payload == b"x"


def test_later_file_replaces_sign_table(tmp_path: Path) -> None:
    make_context(tmp_path, NONE_ONLY, "a.toml")
    ctx = make_context(tmp_path, sign_table("none", ["curve"]), "b.toml")
    with pytest.raises(SignError, match="mechanism=none not allowed"):
        unwrap(ctx, wrap(ctx, b"x"))


def test_configure_without_match(tmp_path: Path) -> None:
    pattern = str(tmp_path / "*.toml")
    with pytest.raises(SignError) as info:
        Context().configure(pattern)
    assert info.value.text == f"pattern {pattern} matched nothing"


def test_context_flags_validated() -> None:
    with pytest.raises(SignError):
        Context(3)


def test_unconfigured_context() -> None:
    with pytest.raises(SignError, match=r"^configuration has not been loaded$"):
        wrap(Context(), b"x")


def test_error_text_truncated_to_199_bytes(ctx: Context) -> None:
    token = header(b"version\0i1\0mechanism\0s" + b"m" * 300 + b"\0") + "..x"
    text = errmsg(ctx, token)
    assert len(text.encode()) == 199
    assert text.startswith("sign-unwrap: header mechanism=mmm")


@pytest.fixture(scope="module")
def fuzz_ctx(tmp_path_factory: pytest.TempPathFactory) -> Context:
    return make_context(tmp_path_factory.mktemp("fuzz"), NONE_ONLY)


@settings(max_examples=300)
@given(data=st.binary(max_size=300))
def test_unwrap_raises_only_signerror(fuzz_ctx: Context, data: bytes) -> None:
    for flags in (0, NOVERIFY):
        with contextlib.suppress(SignError):
            unwrap_anymech(fuzz_ctx, data, flags)


_KEYS = st.sampled_from(["version", "mechanism", "userid", "curve.ctime", "curve.xtime",
                         "curve.cert.meta.uuid", "curve.cert.curve.public-key",
                         "curve.cert.curve.signature"]) | st.text(min_size=1, max_size=12)
_VALUES = st.sampled_from(
    [b"1", b"0", b"none", b"curve", b"2023-08-18T14:59:45Z",
     b"Ta9+ocz1UpMu/7FlWkjS0bFuKIeM9FLhQq9Hilu3kwk="]
) | st.binary(max_size=12)


@settings(max_examples=300)
@given(entries=st.lists(st.tuples(_KEYS.filter(lambda s: "\0" not in s),
                                  st.sampled_from("sidbt"),
                                  _VALUES.filter(lambda b: b"\0" not in b)),
                        max_size=8),
       payload=st.binary(max_size=20))
def test_unwrap_of_structured_headers_raises_only_signerror(
    fuzz_ctx: Context, entries: list[tuple[str, str, bytes]], payload: bytes
) -> None:
    kv = KV()
    for key, typ, raw in entries:
        kv.put_raw(key, typ, raw)
    token = header(kv.encode()) + "." + base64.b64encode(payload).decode() + ".none"
    with contextlib.suppress(SignError):
        unwrap_anymech(fuzz_ctx, token)
