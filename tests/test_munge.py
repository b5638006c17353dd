"""The munge mechanism against a real munged (t1002-sign-munge.t and more)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flux_imp.sign import Context, SignError, b64, munge, unwrap, wrap, wrap_as
from flux_imp.sign.kv import KV

from . import users
from .munged import MUNGE
from .signconf import make_context, sign_table

SHA256 = 1
BOGUS_HASH = 42
NOBODY = 65534
DEFAULT_SOCKET = "/run/munge/munge.socket.2"


def sign_toml(
    socket: str | None, *, max_ttl: int = 60, default: str = "munge", extra: str = ""
) -> str:
    munge_table = f'[sign.munge]\nsocket-path = "{socket}"\n{extra}' if socket else extra
    return sign_table(default, ["munge"], max_ttl) + munge_table


@pytest.fixture
def ctx(tmp_path: Path, munged: str) -> Context:
    return make_context(tmp_path, sign_toml(munged))


def failure(ctx: Context, token: str | bytes) -> str:
    with pytest.raises(SignError) as info:
        unwrap(ctx, token)
    return info.value.text


def munge_encode(socket: str, payload: bytes, *args: str) -> str:
    """A credential from the munge(1) client, i.e. a plain munge_encode()."""
    out = subprocess.run(
        [MUNGE, f"--socket={socket}", *args], input=payload, capture_output=True, check=True
    )
    return out.stdout.decode("ascii").strip()


def sha256_payload(signed: bytes) -> bytes:
    """What the mechanism puts in the credential: hash type, then digest."""
    return bytes([SHA256]) + hashlib.sha256(signed).digest()


def forge(
    socket: str,
    *,
    userid: int | None = None,
    payload: bytes = b"",
    cred_payload: Callable[[bytes], bytes] = sha256_payload,
    munge_args: tuple[str, ...] = (),
) -> str:
    """Hand-build J like upstream's xsign_munge; ``cred_payload`` may lie."""
    header = KV()
    header.put_int("version", 1)
    header.put_str("mechanism", "munge")
    header.put_int("userid", os.getuid() if userid is None else userid)
    signed = b64.encode(header.encode()) + "." + b64.encode(payload)
    cred = munge_encode(socket, cred_payload(signed.encode()), *munge_args)
    return signed + "." + cred


# -- round trips ----------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"Hello\n", b""], ids=["short", "empty"])
def test_sign_verify(ctx: Context, payload: bytes) -> None:
    got = unwrap(ctx, wrap(ctx, payload))
    assert (got.payload, got.userid, got.mechanism) == (payload, os.getuid(), "munge")


def test_hand_made_message_verifies(ctx: Context, munged: str) -> None:
    assert unwrap(ctx, forge(munged, payload=b"hi")).payload == b"hi"


def test_replayed_credential_is_accepted(ctx: Context) -> None:
    token = wrap(ctx, b"x")
    unwrap(ctx, token)
    assert unwrap(ctx, token).payload == b"x"


def test_munge_expired_credential_is_accepted(ctx: Context, munged: str) -> None:
    token = forge(munged, munge_args=("--ttl=1",))
    time.sleep(2.1)  # past MUNGE's own ttl, well within max-ttl
    assert unwrap(ctx, token).userid == os.getuid()


def test_trailing_newline_still_verifies(ctx: Context) -> None:
    assert unwrap(ctx, wrap(ctx, b"x") + "\n").payload == b"x"


def test_sign_after_failed_verify(ctx: Context) -> None:
    failure(ctx, wrap(ctx, b"x")[:-1])
    assert unwrap(ctx, wrap(ctx, b"x")).payload == b"x"


def test_reconfigure_drops_cached_state(tmp_path: Path, munged: str) -> None:
    ctx = make_context(tmp_path, sign_toml(munged))
    token = wrap(ctx, b"x")
    (tmp_path / "conf.d" / "sign.toml").write_text(sign_toml("/nonexistent/munge.socket"))
    ctx.configure(str(tmp_path / "conf.d" / "*.toml"))
    assert failure(ctx, token).startswith("sign-munge-verify: munge_decode: Failed to access")


# -- verify failures, in upstream's order ------------------------------------------


def test_corrupted_credential(ctx: Context, munged: str) -> None:
    token = forge(munged)
    cut = token.rindex(".") + 11  # signature[10], as upstream's xcredchg
    token = token[:cut] + chr(ord(token[cut]) + 1) + token[cut + 1 :]
    assert failure(ctx, token).startswith("sign-munge-verify: munge_decode: ")


@pytest.mark.parametrize(
    ("edit", "text"),
    [
        (lambda cred: cred[len("MUNGE:") :], "Failed to match armor prefix"),
        (lambda cred: cred[:-1], "Failed to match armor suffix"),
        (lambda cred: "", "No credential specified"),
    ],
    ids=["prefix", "suffix", "empty"],
)
def test_munge_decode_error_text(ctx: Context, edit: Callable[[str], str], text: str) -> None:
    head, _, cred = wrap(ctx, b"x").rpartition(".")
    token = head + "." + edit(cred)
    assert failure(ctx, token) == f"sign-munge-verify: munge_decode: {text}"


@pytest.mark.parametrize(
    "cred_payload",
    [lambda signed: bytes([BOGUS_HASH]) + sha256_payload(signed)[1:], lambda signed: b""],
    ids=["bogus", "empty"],
)
def test_unknown_hash_type(
    ctx: Context, munged: str, cred_payload: Callable[[bytes], bytes]
) -> None:
    token = forge(munged, cred_payload=cred_payload)
    assert failure(ctx, token) == "sign-munge-verify: unknown hash type"


def changed_digest(good: bytes) -> bytes:
    # Upstream's xhashchg adds one to the first digest byte.
    return good[:1] + bytes([(good[1] + 1) % 256]) + good[2:]


@pytest.mark.parametrize(
    "cred_payload",
    [
        lambda signed: sha256_payload(signed[:-1]),  # upstream's xhashtrunc
        lambda signed: sha256_payload(signed)[:-1],
        lambda signed: sha256_payload(signed) + b"\0",
        lambda signed: changed_digest(sha256_payload(signed)),
    ],
    ids=["hash-of-truncated-input", "short-digest", "long-digest", "changed-digest"],
)
def test_hash_mismatch(ctx: Context, munged: str, cred_payload: Callable[[bytes], bytes]) -> None:
    token = forge(munged, cred_payload=cred_payload)
    assert failure(ctx, token) == "sign-munge-verify: SHA256 hash mismatch"


def test_changed_payload(ctx: Context) -> None:
    head, _, rest = wrap(ctx, b"payload").partition(".")
    token = head + "." + b64.encode(b"bogus") + "." + rest.partition(".")[2]
    assert failure(ctx, token) == "sign-munge-verify: SHA256 hash mismatch"


@pytest.mark.parametrize(
    "delta", [1, -1 - os.getuid(), 2**32], ids=["next-uid", "minus-one", "high-bits"]
)
def test_header_userid_differs_from_credential(ctx: Context, munged: str, delta: int) -> None:
    # Compared as unsigned 64-bit: neither wrap-around nor truncation matches.
    token = forge(munged, userid=os.getuid() + delta)
    assert failure(ctx, token) == "sign-munge-verify: uid mismatch"


def test_wrap_as_other_user_fails_verify(ctx: Context) -> None:
    token = wrap_as(ctx, os.getuid() + 1, b"x")
    assert failure(ctx, token) == "sign-munge-verify: uid mismatch"


def sign_as_nobody(ctx: Context, header_userid: int) -> str:
    """wrap_as() in a child running as uid 65534, through the same munged."""
    drop = users.with_ids(NOBODY, NOBODY, [])
    return users.output_as(drop, lambda: wrap_as(ctx, header_userid, b"x").encode()).decode()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another uid")


@needs_root
def test_other_user_verifies_as_that_user(ctx: Context) -> None:
    assert unwrap(ctx, sign_as_nobody(ctx, NOBODY)).userid == NOBODY


@needs_root
def test_other_user_claiming_root_fails_verify(ctx: Context) -> None:
    token = sign_as_nobody(ctx, 0)
    assert failure(ctx, token) == "sign-munge-verify: uid mismatch"


def test_max_ttl_exceeded(tmp_path: Path, munged: str) -> None:
    ctx = make_context(tmp_path, sign_toml(munged, max_ttl=-100))
    assert failure(ctx, wrap(ctx, b"")) == "sign-munge-verify: max-ttl exceeded"


# -- init and sign failures ----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        ("bogus = 42\n", "key 'bogus' is unknown"),
        ("[sign.munge.sub]\n", "key 'sub' is unknown"),
    ],
)
def test_unknown_munge_key(tmp_path: Path, munged: str, extra: str, text: str) -> None:
    ctx = make_context(tmp_path, sign_toml(munged, extra=extra))
    for attempt in (lambda: wrap(ctx, b""), lambda: unwrap(ctx, forge(munged))):
        with pytest.raises(SignError) as info:
            attempt()
        assert info.value.text == f"sign-munge-init: {text}"


def test_socket_path_must_be_string(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, sign_toml(None, extra="[sign.munge]\nsocket-path = 42\n"))
    with pytest.raises(SignError) as info:
        wrap(ctx, b"")
    assert info.value.text == "sign-munge-init: 'socket-path' must be of type string"


def test_bad_socket_path(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, sign_toml("/nonexistent/munge.socket"))
    with pytest.raises(SignError) as info:
        wrap(ctx, b"")
    assert info.value.text == (
        'sign-munge-sign: Failed to access "/nonexistent/munge.socket":'
        " No such file or directory (Did you start munged?)"
    )


@pytest.mark.skipif(os.path.exists(DEFAULT_SOCKET), reason="a system munged is running")
def test_munge_table_is_optional(tmp_path: Path) -> None:
    # Without [sign.munge] libmunge's default socket is used.
    ctx = make_context(tmp_path, sign_toml(None))
    with pytest.raises(SignError) as info:
        wrap(ctx, b"")
    assert info.value.text == (
        f'sign-munge-sign: Failed to access "{DEFAULT_SOCKET}":'
        " No such file or directory (Did you start munged?)"
    )


def test_mechanism_not_allowed(tmp_path: Path, munged: str) -> None:
    ctx = make_context(tmp_path, sign_toml(munged, default="none"))
    token = wrap(ctx, b"")
    assert failure(ctx, token) == "sign-unwrap: header mechanism=none not allowed"


def test_missing_libmunge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(munge, "_SONAME", "libmunge-missing.so.2")
    munge._lib.cache_clear()
    try:
        ctx = make_context(tmp_path, sign_toml("/nonexistent/munge.socket"))
        with pytest.raises(SignError) as info:
            wrap(ctx, b"")
    finally:
        munge._lib.cache_clear()
    assert info.value.text.startswith("sign-munge-init: libmunge-missing.so.2: cannot open")
