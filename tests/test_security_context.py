"""flux-core's ``flux.security.SecurityContext`` API over our signing library:
the C-verified vectors, round trips for every mechanism, argument types,
errors as ``OSError(errno, message)``, the config pattern and the flags."""

from __future__ import annotations

import base64
import errno
import json
import os
import pwd
import shutil
from pathlib import Path
from typing import Any

import pytest

from flux_imp import sign
from flux_imp.paths import SECURITY_CONFIG_PATTERN
from flux_imp.sign import (
    DISABLE_PATH_PARANOIA,
    FORCE_PATH_PARANOIA,
    NOVERIFY,
    Context,
    SignError,
    unwrap,
)
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert
from flux_imp.sign.security import SecurityContext

from . import users
from .signconf import NONE_ONLY, VECTORS, sign_table
from .test_curve import ca_table as curve_ca_table
from .test_munge import sign_toml

UID = os.getuid()


def pattern_of(where: Path, toml: str) -> str:
    """Write ``toml`` as ``where``/conf.d/sign.toml; the pattern that reads it."""
    confdir = where / "conf.d"
    confdir.mkdir(exist_ok=True)
    (confdir / "sign.toml").write_text(toml)
    return str(confdir / "*.toml")


def context(where: Path, toml: str = NONE_ONLY) -> SecurityContext:
    return SecurityContext(pattern_of(where, toml), DISABLE_PATH_PARANOIA)


def failure(func: Any, *args: Any) -> tuple[int | None, str | None]:
    with pytest.raises(OSError) as info:
        func(*args)
    # OSError(errno, text), as flux-core raises: Python picks the subclass
    # (ENOENT: FileNotFoundError).
    assert type(info.value) is type(OSError(info.value.errno, ""))
    return info.value.errno, info.value.strerror


# -- vectors signed and verified by the C library --------------------------------
def _vector_cases() -> list[Any]:
    path = VECTORS / "curve-ca.json"
    if not path.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{path} not found"))]
    cases = json.loads(path.read_text())["cases"]
    # flux-core's binding has no unwrap_anymech
    return [pytest.param(case, id=case["name"]) for case in cases if not case["anymech"]]


@pytest.fixture
def vector_ctx(tmp_path: Path) -> SecurityContext:
    shutil.copy(VECTORS / "ca.pub", tmp_path / "ca.pub")
    (tmp_path / "revoke.d").mkdir()
    return context(tmp_path, (VECTORS / "sign.toml.in").read_text().replace("@DIR@",
                                                                            str(tmp_path)))


@pytest.mark.parametrize("case", _vector_cases())
def test_vector(case: dict[str, Any], vector_ctx: SecurityContext) -> None:
    if case["name"].startswith("none") and UID != 0:
        pytest.skip("the none vectors are signed for uid 0; run as root")
    expect = case["expect"]
    signed = case["J"].encode()
    if expect["ok"]:
        assert vector_ctx.sign_unwrap(signed) == (base64.b64decode(expect["payload"]),
                                                  expect["userid"])
    else:
        # Upstream: "incomplete header" follows kv_get's ENOENT, the rest EINVAL.
        code = errno.ENOENT if expect["error"].endswith("incomplete header") else errno.EINVAL
        assert failure(vector_ctx.sign_unwrap, signed) == (code, expect["error"])


# -- round trips --------------------------------------------------------------------
def test_none_round_trip(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    signed = ctx.sign_wrap(b"hello")
    assert isinstance(signed, bytes)
    assert signed.endswith(b".aGVsbG8=.none")
    assert ctx.sign_unwrap(signed) == (b"hello", UID)


def test_str_payload_is_utf8(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert ctx.sign_wrap("héllo") == ctx.sign_wrap("héllo".encode())
    assert ctx.sign_unwrap(ctx.sign_wrap("héllo")) == ("héllo".encode(), UID)


def test_empty_payload(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert ctx.sign_unwrap(ctx.sign_wrap(b"")) == (b"", UID)


def test_same_token_as_the_library(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert ctx.sign_wrap_as(1000, b"hello", "none").decode() == sign.wrap_as(
        ctx.context, 1000, b"hello", "none")


def test_sign_wrap_as_puts_userid_in_header(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    signed = ctx.sign_wrap_as(4242, "p", "none")
    assert ctx.sign_unwrap(signed, NOVERIFY) == (b"p", 4242)
    assert failure(ctx.sign_unwrap, signed) == (
        errno.EINVAL, f"sign-none-verify: header userid 4242 != real {UID}")


def test_mech_type_as_bytes(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert ctx.sign_wrap(b"x", b"none") == ctx.sign_wrap(b"x", "none")


def test_curve_round_trip_with_ca(tmp_path: Path) -> None:
    """A CA-signed cert of ours (CA mode, as test_curve's Pki)."""
    authority = CA(curve_ca_table(tmp_path))
    authority.keygen()
    authority.store()
    user = Cert.create()
    authority.sign(user, 0, UID)
    user.store(str(tmp_path / "u"))
    toml = (sign_table("curve", ["curve"], 60) + f'[sign.curve]\nrequire-ca = true\n'
            f'cert-path = "{tmp_path / "u"}"\n[ca]\n' + "".join(
                f"{k} = {json.dumps(v)}\n" for k, v in curve_ca_table(tmp_path).items()))
    ctx = context(tmp_path, toml)
    for payload in (b"hi", "hé", b""):
        signed = ctx.sign_wrap(payload)
        expected = payload.encode() if isinstance(payload, str) else payload
        assert ctx.sign_unwrap(signed) == (expected, UID)


def test_munge_round_trip(tmp_path: Path, munged: str) -> None:
    ctx = context(tmp_path, sign_toml(munged))
    assert ctx.sign_unwrap(ctx.sign_wrap(b"hello")) == (b"hello", UID)


def test_munge_signed_by_another_user(world_tmp: Path, munged: str,
                                      guest: pwd.struct_passwd) -> None:
    pattern = pattern_of(world_tmp, sign_toml(munged))
    signed = users.output_as(users.become(guest), lambda: SecurityContext(
        pattern, DISABLE_PATH_PARANOIA).sign_wrap("job"))
    assert SecurityContext(pattern, DISABLE_PATH_PARANOIA).sign_unwrap(signed) == (
        b"job", guest.pw_uid)


def test_munge_sign_wrap_as_other_user_is_refused_on_verify(tmp_path: Path,
                                                           munged: str) -> None:
    ctx = context(tmp_path, sign_toml(munged))
    assert failure(ctx.sign_unwrap, ctx.sign_wrap_as(UID + 1, b"x")) == (
        errno.EINVAL, "sign-munge-verify: uid mismatch")


# -- argument types ----------------------------------------------------------------
@pytest.mark.parametrize("payload", [None, 42, bytearray(b"x"), ["x"]])
def test_payload_must_be_text_or_binary(tmp_path: Path, payload: Any) -> None:
    ctx = context(tmp_path)
    message = f"payload must be a text or binary type, not {type(payload)}"
    with pytest.raises(TypeError) as info:
        ctx.sign_wrap(payload)
    assert str(info.value) == message
    with pytest.raises(TypeError) as info:
        ctx.sign_wrap_as(UID, payload)
    assert str(info.value) == message


@pytest.mark.parametrize("signed", ["J.x.none", None, bytearray(b"J.x.none")])
def test_signed_payload_must_be_bytes(tmp_path: Path, signed: Any) -> None:
    ctx = context(tmp_path)
    with pytest.raises(TypeError) as info:
        ctx.sign_unwrap(signed)
    assert str(info.value) == f"signed_payload must be a binary type, not {type(signed)}"


# -- errors: the library's message, upstream's errno ----------------------------
def test_unknown_mechanism(tmp_path: Path) -> None:
    assert failure(context(tmp_path).sign_wrap, b"x", "foo") == (
        errno.EINVAL, "sign-wrap: unknown mechanism: foo")


def test_negative_userid(tmp_path: Path) -> None:
    assert failure(context(tmp_path).sign_wrap_as, -1, b"x") == (
        errno.EINVAL, "Invalid argument")


def test_wrap_flags(tmp_path: Path) -> None:
    assert failure(context(tmp_path).sign_wrap, b"x", None, 1) == (
        errno.EINVAL, "Invalid argument")


def test_unwrap_bad_flags(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert failure(ctx.sign_unwrap, ctx.sign_wrap(b"x"), 2) == (
        errno.EINVAL, "Invalid argument")


def test_noverify_skips_the_signature(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    signed = ctx.sign_wrap_as(7, b"p", "none")[:-4] + b"garbage"
    assert ctx.sign_unwrap(signed, NOVERIFY) == (b"p", 7)


def test_message_is_the_library_message(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    signed = ctx.sign_wrap(b"x") + b"\n"
    with pytest.raises(SignError) as lib:
        unwrap(ctx.context, signed)
    with pytest.raises(OSError) as ours:
        ctx.sign_unwrap(signed)
    assert ours.value.strerror == lib.value.text == "sign-none-verify: signature invalid"
    assert str(ours.value) == "[Errno 22] sign-none-verify: signature invalid"


def test_missing_sign_table_is_enoent(tmp_path: Path) -> None:
    ctx = context(tmp_path, "[other]\nx = 1\n")
    assert failure(ctx.sign_wrap, b"x") == (
        errno.ENOENT, "configuration object 'sign' not found")


def test_unknown_default_type_is_the_stale_enoent(tmp_path: Path) -> None:
    """Upstream sets no message for it: aux_get's ENOENT text remains."""
    ctx = context(tmp_path, sign_table("none").replace('default-type = "none"',
                                                       'default-type = "foo"'))
    assert failure(ctx.sign_wrap, b"x") == (errno.ENOENT, "No such file or directory")


def test_curve_missing_cert_carries_its_errno(tmp_path: Path) -> None:
    ctx = context(tmp_path, sign_table("curve") + (
        f'[sign.curve]\nrequire-ca = true\ncert-path = "{tmp_path}/nope"\n'))
    with pytest.raises(SignError) as lib:
        sign.wrap(ctx.context, b"x")
    assert failure(ctx.sign_wrap, b"x") == (errno.ENOENT, lib.value.text)
    assert lib.value.text.endswith(": No such file or directory")


# -- config pattern and flags -----------------------------------------------------
def test_default_pattern_is_the_installed_one() -> None:
    """SecurityContext() reads what Context().configure() reads, or fails alike."""
    expected = Context()
    try:
        expected.configure(SECURITY_CONFIG_PATTERN)
    except SignError as exc:
        assert failure(SecurityContext) == (errno.EINVAL, exc.text)
    else:
        assert SecurityContext().context.config == expected.config


def test_explicit_pattern(tmp_path: Path) -> None:
    ctx = context(tmp_path, sign_table("none", max_ttl=77))
    assert ctx.context.config is not None
    assert ctx.context.config["sign"]["max-ttl"] == 77


def test_pattern_as_bytes(tmp_path: Path) -> None:
    pattern = pattern_of(tmp_path, NONE_ONLY)
    assert SecurityContext(pattern.encode(), DISABLE_PATH_PARANOIA).context.config == (
        SecurityContext(pattern, DISABLE_PATH_PARANOIA).context.config)


def test_pattern_matching_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    pattern = str(tmp_path / "empty" / "*.toml")
    assert failure(SecurityContext, pattern, DISABLE_PATH_PARANOIA) == (
        errno.EINVAL, f"pattern {pattern} matched nothing")


def test_path_paranoia_and_its_flags(tmp_path: Path) -> None:
    """A world-writable config: refused by default and with FORCE, read with
    DISABLE (upstream's test flag)."""
    pattern = pattern_of(tmp_path, NONE_ONLY)
    path = tmp_path / "conf.d" / "sign.toml"
    path.chmod(0o666)
    message = f"{path}::-1: unable to open: bad file permissions (0666)"
    assert failure(SecurityContext, pattern) == (errno.EINVAL, message)
    assert failure(SecurityContext, pattern, FORCE_PATH_PARANOIA) == (errno.EINVAL, message)
    assert SecurityContext(pattern, DISABLE_PATH_PARANOIA).sign_wrap(b"x")


@pytest.mark.parametrize("flags", [3, 4, -1])
def test_invalid_flags(tmp_path: Path, flags: int) -> None:
    assert failure(SecurityContext, pattern_of(tmp_path, NONE_ONLY), flags) == (
        errno.EINVAL, "Invalid argument")


def test_exported_by_the_signing_package() -> None:
    assert sign.SecurityContext is SecurityContext
