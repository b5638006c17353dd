"""J = HEADER.PAYLOAD.SIGNATURE (RFC 39): wrap and unwrap.

The order of checks and every message mirror flux-security's sign.c,
because callers and tests match on them.
"""

from __future__ import annotations

import posix
import sys

from .. import conf as cf
from . import b64
from .errors import SignError
from .kv import KV, KVError

# Annotations only: typing costs the IMP start-up time.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from typing import Any

    from .context import Context
    from .mech import Mechanism

NOVERIFY = 1  # FLUX_SIGN_NOVERIFY
_VERSION = 1
_MECH_MODULES = {"none": "none", "munge": "munge", "curve": "curve"}
_SIGN_OPTS = (
    cf.Option("max-ttl", "int64", True),
    cf.Option("default-type", "string", True),
    cf.Option("allowed-types", "array", True),
)
_EINVAL = posix.strerror(22)  # "Invalid argument"
_ENOENT = posix.strerror(2)


class Unwrapped(tuple[bytes, int, str]):
    """A named tuple (``payload, userid, mechanism``) without typing."""

    __slots__ = ()

    def __new__(cls, payload: bytes, userid: int, mechanism: str) -> Unwrapped:
        return tuple.__new__(cls, (payload, userid, mechanism))

    @property
    def payload(self) -> bytes:
        return self[0]

    @property
    def userid(self) -> int:
        return self[1]

    @property
    def mechanism(self) -> str:
        return self[2]

    def __repr__(self) -> str:
        return (f"Unwrapped(payload={self.payload!r}, userid={self.userid!r}, "
                f"mechanism={self.mechanism!r})")


def lookup_mech(name: str) -> Mechanism | None:
    """The mechanism called ``name``, its module imported on first use:
    naming one in a config (allowed-types) does not import it."""
    mod = _MECH_MODULES.get(name)
    if mod is None:
        return None
    name = f"{__package__}.{mod}"
    __import__(name)  # importlib itself would cost start-up time
    mech: Mechanism = sys.modules[name].MECH
    return mech


def prepare_verify(ctx: Context) -> None:
    """Do now what verifying any J with ``ctx`` will need: validate
    ``[sign]``, import and init each allowed mechanism, and let it load what
    it reads from the config's files (curve: the CA).  For a process with
    time to spare before its J comes (the IMP's parent while its child
    works).  Raises SignError on the first invalid ``[sign]``; a mechanism
    that fails is skipped: its verify meets the same error again, as
    nothing is cached half-done."""
    table = sign_config(ctx)
    for name in table["allowed-types"]:  # validated: a non-empty array of names
        mech = lookup_mech(name)
        if mech is None:
            continue
        try:
            mech.init(ctx, table)
            warm = getattr(mech, "warm", None)  # only where there is something to load
            if warm is not None:
                warm(ctx)
        except SignError:
            continue


def sign_config(ctx: Context) -> dict[str, Any]:
    """The validated ``[sign]`` table; validated lazily, once per context."""
    cached = ctx.aux.get("flux::sign")
    if cached is not None:
        return dict(cached)
    table = ctx.get_config("sign")
    try:
        cf.check(table, _SIGN_OPTS, strict=True, anytab=True)
    except cf.ConfigError as exc:
        raise SignError(f"sign: config error: {exc.text}") from exc
    max_ttl = cf.as_int(table.get("max-ttl"))
    if max_ttl <= 0 and max_ttl != -100:  # -100 is allowed for testing
        raise SignError("sign: max-ttl should be greater than zero")
    allowed = table.get("allowed-types")
    for i, el in enumerate(allowed):
        if not isinstance(el, str):
            raise SignError(f"sign: allowed-types[{i}] not a string")
        if el not in _MECH_MODULES:  # known, not imported: a J imports its own
            raise SignError(f"sign: unknown mechanism={el}")
    if not allowed:
        raise SignError("sign: allowed-types array is empty")
    if cf.as_str(table.get("default-type")) not in _MECH_MODULES:
        # Upstream sets no message here; the stale ENOENT text remains.
        raise SignError(_ENOENT)
    ctx.aux["flux::sign"] = table
    return dict(table)


def wrap_as(
    ctx: Context, userid: int, payload: bytes, mech_type: str | None = None, flags: int = 0
) -> str:
    """Sign ``payload`` on behalf of ``userid``; return J."""
    if userid < 0 or flags != 0:
        raise SignError(_EINVAL)
    table = sign_config(ctx)
    if mech_type is None:
        mech_type = cf.as_str(table.get("default-type"))
    mech = lookup_mech(mech_type)
    if mech is None:
        raise SignError(f"sign-wrap: unknown mechanism: {mech_type}")
    mech.init(ctx, table)
    header = KV()
    header.put_int("version", _VERSION)
    header.put_str("mechanism", mech.name)
    try:
        header.put_int("userid", userid)
    except KVError as exc:
        raise SignError(_EINVAL) from exc
    mech.prep(ctx, header)
    data = (b64.encode(header.encode()) + "." + b64.encode(payload)).encode("ascii")
    signature = mech.sign(ctx, data)
    return data.decode("ascii") + "." + signature


def wrap(ctx: Context, payload: bytes, mech_type: str | None = None, flags: int = 0) -> str:
    """Sign ``payload`` as the real uid."""
    return wrap_as(ctx, posix.getuid(), payload, mech_type, flags)


def _decode_header(raw: bytes) -> tuple[KV, int]:
    # Returns the header and the offset of the first '.'.
    dot = raw.find(b".")
    if dot <= 0:
        raise ValueError("no header")
    return KV.decode(b64.decode(raw[:dot])), dot


def _unwrap(ctx: Context, token: str | bytes, flags: int, check_allowed: bool) -> Unwrapped:
    if flags not in (0, NOVERIFY):
        raise SignError(_EINVAL)
    table = sign_config(ctx)
    raw = token.encode("utf-8", "surrogateescape") if isinstance(token, str) else token
    raw = raw.split(b"\0", 1)[0]  # J is a C string upstream
    try:
        header, dot = _decode_header(raw)
    except (ValueError, KVError) as exc:
        raise SignError(f"sign-unwrap: header decode error: {_EINVAL}") from exc
    version = header.get_int("version")
    if version is None:
        raise SignError("sign-unwrap: header version missing")
    if version != _VERSION:
        # Printed through a C int cast: keep the low 32 bits, signed.
        as_int = (version + 2**31) % 2**32 - 2**31
        raise SignError(f"sign-unwrap: header version={as_int} unknown")
    mechanism = header.get_str("mechanism")
    if mechanism is None:
        raise SignError("sign-unwrap: header mechanism missing")
    mech = lookup_mech(mechanism)
    if mech is None:
        raise SignError(f"sign-unwrap: header mechanism={mechanism} unknown")
    if check_allowed and not cf.array_contains(table.get("allowed-types"), mechanism):
        raise SignError(f"sign-unwrap: header mechanism={mechanism} not allowed")
    userid = header.get_int("userid")
    if userid is None:
        raise SignError("sign-unwrap: header userid missing")
    end = raw.find(b".", dot + 1)
    try:
        if end < 0:
            raise ValueError("no payload")
        payload = b64.decode(raw[dot + 1 : end]) if end > dot + 1 else b""
    except ValueError as exc:
        raise SignError(f"sign-unwrap: payload decode error: {_EINVAL}") from exc
    if not flags & NOVERIFY:
        mech.init(ctx, table)
        mech.verify(ctx, header, raw[:end], raw[end + 1 :])
    return Unwrapped(payload, userid, mech.name)


def unwrap(ctx: Context, token: str | bytes, flags: int = 0) -> Unwrapped:
    """Verify J, enforcing ``sign.allowed-types``."""
    return _unwrap(ctx, token, flags, check_allowed=True)


def unwrap_anymech(ctx: Context, token: str | bytes, flags: int = 0) -> Unwrapped:
    """Verify J with any known mechanism."""
    return _unwrap(ctx, token, flags, check_allowed=False)
