"""The ``munge`` mechanism: a MUNGE credential over SHA-256(HEADER.PAYLOAD).

The credential's payload is one hash-type byte (1 = SHA-256) followed by
the digest; munged vouches for the uid.  libmunge is reached through
flux_imp.cfunc (not ctypes, which costs milliseconds to import) and
loaded on first use, so importing this module needs no MUNGE.
Verify accepts replayed and MUNGE-expired credentials on purpose: the IMP
and the job shell decode the same credential, and the lifetime that
counts is the local ``[sign] max-ttl``.
"""

from __future__ import annotations

import posix
import sys
import time

from .. import cfunc as C
from .. import conf as cf
from ..fs import fsencode
from .errors import SignError

TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from collections.abc import Callable
    from hashlib import sha256
    from hmac import compare_digest
    from typing import Any  # annotations only: typing costs start-up time

    from .context import Context
    from .kv import KV
else:
    # CPython's own SHA-256 where it is built in: hashlib (and hmac, which
    # imports it) load OpenSSL's libcrypto, which costs the IMP, verifying
    # J in both halves, milliseconds each and the lingering parent memory.
    # Builds without it (FIPS distributions) use hashlib's.  The digest is
    # the same bytes either way.
    try:
        if sys.version_info >= (3, 12):
            from _sha2 import sha256
        else:
            from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    from _operator import _compare_digest as compare_digest  # hmac.compare_digest itself

# Loaded by soname only: no search path comes from the caller's environment.
_SONAME = "libmunge.so.2"
# munge.h constants.
_OPT_ENCODE_TIME = 6
_OPT_SOCKET = 8
_EMUNGE_SUCCESS = 0
_EMUNGE_CRED_EXPIRED = 15
_EMUNGE_CRED_REPLAYED = 17
_DECODE_OK = (_EMUNGE_SUCCESS, _EMUNGE_CRED_REPLAYED, _EMUNGE_CRED_EXPIRED)

_HASH_SHA256 = 1
_AUXNAME = "flux::sign_munge"
_OPTS = (cf.Option("socket-path", "string", False),)
_UINT64 = 2**64


class _LibMunge:
    """The libmunge calls we make, with their C prototypes declared."""

    def __init__(self) -> None:
        lib = C.Library(_SONAME)
        vp, ip = C.c_void_p, C.c_int
        self.ctx_create = lib.function("munge_ctx_create", vp, [])
        self.ctx_destroy = lib.function("munge_ctx_destroy", None, [vp])
        self.ctx_strerror = lib.function("munge_ctx_strerror", C.c_char_p, [vp])
        # munge_ctx_set/get are variadic: declare only the fixed part and
        # pass the last argument as an instance of its C type.
        self.ctx_set = lib.function("munge_ctx_set", ip, [vp, ip])
        self.ctx_get = lib.function("munge_ctx_get", ip, [vp, ip])
        self.encode = lib.function("munge_encode", ip, [C.POINTER(vp), vp, C.c_char_p, ip])
        self.decode = lib.function("munge_decode", ip, [
            C.c_char_p, vp, C.POINTER(vp), C.POINTER(ip), C.POINTER(C.c_uint), vp,
        ])  # fmt: skip
        # What libmunge mallocs must go back to the same allocator.
        self.free = C.Library(None).function("free", None, [vp])


class _Cached:
    """``functools.cache`` of a function without arguments (cache_clear()
    included): functools imports collections, which costs start-up time."""

    def __init__(self, make: Callable[[], _LibMunge]) -> None:
        self._make = make
        self._value: _LibMunge | None = None

    def __call__(self) -> _LibMunge:
        if self._value is None:
            self._value = self._make()  # an exception is not cached
        return self._value

    def cache_clear(self) -> None:
        self._value = None


@_Cached
def _lib() -> _LibMunge:
    return _LibMunge()


class _State:
    """Per-Context state (upstream's aux ``struct sign_munge``).

    Upstream encodes and decodes with one munge context, but a decode
    leaves the credential's options (or -1 after a failure) in it, and a
    later encode reuses them: sign after a failed verify then fails with
    "Invalid MAC type".  Separate contexts keep encodes on the defaults.
    """

    def __init__(self, lib: _LibMunge, max_ttl: int) -> None:
        self.lib = lib
        self.max_ttl = max_ttl
        self.handles: list[int] = []
        self.encoder = self._create()
        self.decoder = self._create()

    def _create(self) -> int:
        handle: int | None = self.lib.ctx_create()
        if not handle:
            raise SignError(posix.strerror(12))  # ENOMEM, as upstream reports
        self.handles.append(handle)
        return handle

    def __del__(self) -> None:
        # Not weakref.finalize: importing weakref costs each exec half
        # milliseconds.  Nothing refers back to a _State, so no cycle delays this.
        for handle in self.handles:
            self.lib.ctx_destroy(handle)

    def set_socket(self, path: str) -> None:
        # C sees the string only up to a NUL.
        path = path.split("\0", 1)[0]
        raw = C.c_char_p(fsencode(path))
        for handle in (self.encoder, self.decoder):
            if self.lib.ctx_set(handle, _OPT_SOCKET, raw) != 0:
                raise SignError(f"sign-munge-init: munge_opt_set {path}: {self.strerror(handle)}")

    def strerror(self, handle: int) -> str:
        # printf("%s", NULL) prints "(null)" with glibc.
        text: bytes | None = self.lib.ctx_strerror(handle)
        return "(null)" if text is None else text.decode("utf-8", "surrogateescape")


def _digest(data: bytes) -> bytes:
    return bytes([_HASH_SHA256]) + sha256(data).digest()


def _state(ctx: Context) -> _State:
    state: _State = ctx.aux[_AUXNAME]
    return state


class MungeMech:
    name = "munge"

    def init(self, ctx: Context, sign_cfg: dict[str, Any]) -> None:
        # After an init error upstream leaves its freed state registered in
        # aux (used again by the next call); we cache only a complete state,
        # so the same error is reported again instead.
        if _AUXNAME in ctx.aux:
            return
        try:
            lib = _lib()
        except OSError as exc:
            raise SignError(f"sign-munge-init: {exc}") from exc
        state = _State(lib, cf.as_int(sign_cfg.get("max-ttl")))
        table = cf.get_in(sign_cfg, "munge")  # optional
        if table is not None:
            try:
                cf.check(table, _OPTS, strict=True, anytab=False)
            except cf.ConfigError as exc:
                raise SignError(f"sign-munge-init: {exc.text}") from exc
            socket_path = cf.get_in(table, "socket-path")
            if socket_path is not None:
                state.set_socket(cf.as_str(socket_path))
        ctx.aux[_AUXNAME] = state

    def prep(self, ctx: Context, header: KV) -> None:
        pass

    def sign(self, ctx: Context, data: bytes) -> str:
        state = _state(ctx)
        digest = _digest(data)
        cred = C.c_void_p()
        err = state.lib.encode(C.byref(cred), state.encoder, digest, len(digest))
        try:
            addr = cred.value
            if err != _EMUNGE_SUCCESS or addr is None:
                raise SignError(f"sign-munge-sign: {state.strerror(state.encoder)}")
            text = C.string_at(addr)  # a NUL-terminated ASCII armor
        finally:
            state.lib.free(cred)
        return text.decode("ascii")

    def verify(self, ctx: Context, header: KV, data: bytes, signature: bytes) -> None:
        state = _state(ctx)
        buf = C.c_void_p()
        size = C.c_int()
        uid = C.c_uint()
        err = state.lib.decode(
            signature, state.decoder, C.byref(buf), C.byref(size), C.byref(uid), None
        )
        try:
            payload = C.string_at(buf.value, size.value) if buf.value else b""
        finally:
            state.lib.free(buf)
        if err not in _DECODE_OK:
            raise SignError(f"sign-munge-verify: munge_decode: {state.strerror(state.decoder)}")
        if not payload or payload[0] != _HASH_SHA256:
            raise SignError("sign-munge-verify: unknown hash type")
        if not compare_digest(payload, _digest(data)):
            raise SignError("sign-munge-verify: SHA256 hash mismatch")
        userid = header.get_int("userid")
        # Upstream compares as uint64: a negative userid never matches.
        if userid is None or userid % _UINT64 != uid.value:
            raise SignError("sign-munge-verify: uid mismatch")
        encode_time = C.c_time_t()
        if state.lib.ctx_get(state.decoder, _OPT_ENCODE_TIME, C.byref(encode_time)) != 0:
            raise SignError(
                "sign-munge-verify: munge_ctx_get ENCODE_TIME: " + state.strerror(state.decoder)
            )
        if encode_time.value + state.max_ttl < int(time.time()):
            raise SignError("sign-munge-verify: max-ttl exceeded")


MECH = MungeMech()
