"""flux-core's ``flux.security.SecurityContext``, over this signing library.

Code written for flux-core's Python binding (a cffi wrapper of
libflux-security) runs unchanged with::

    from flux_imp.sign.security import SecurityContext

Same constructor, methods, argument types, results and exceptions: str
payloads are UTF-8 encoded, ``sign_wrap`` returns J as bytes,
``sign_unwrap`` takes bytes and returns ``(payload, userid)``, and a
library failure raises ``OSError(errno, message)`` with the message
``flux_security_last_error()`` would give.

This is deliberately not a top-level ``flux`` package: on a Flux system
that name is flux-core's, and a second one would shadow it.
"""

from __future__ import annotations

import errno
import os

from . import DISABLE_PATH_PARANOIA, FORCE_PATH_PARANOIA
from .context import Context
from .errors import SignError
from .token import NOVERIFY, unwrap, wrap_as

__all__ = ["DISABLE_PATH_PARANOIA", "FORCE_PATH_PARANOIA", "NOVERIFY", "SecurityContext"]

# Upstream keeps the errno of the failing call next to the message.  Our
# SignError carries the message only, so the errno is read back from it:
# a message that is (or ends with) strerror(e) came with e; the messages
# upstream writes after a failed lookup (cf_get_in, kv_get: ENOENT) come
# with ENOENT; nearly every other one follows errno = EINVAL.  Where
# upstream leaves a stale errno (e.g. "ca: userid mismatch") we say EINVAL.
_BY_STRERROR = {os.strerror(code): code for code in sorted(errno.errorcode, reverse=True)}
_AFTER_LOOKUP = (" not found", " config missing", ": incomplete header")


def _errno_of(text: str) -> int:
    code = _BY_STRERROR.get(text.rpartition(": ")[2])
    if code is not None:
        return code
    if text.endswith(_AFTER_LOOKUP):
        return errno.ENOENT
    return errno.EINVAL


def _error(exc: SignError) -> OSError:
    return OSError(_errno_of(exc.text), exc.text)


def _mech(mech_type: str | bytes | None) -> str | None:
    # cffi passes str or bytes for a const char * argument.
    if isinstance(mech_type, bytes):
        return mech_type.decode("utf-8", "surrogateescape")
    if mech_type is None or isinstance(mech_type, str):
        return mech_type
    raise TypeError(f"mech_type must be a text or binary type, not {type(mech_type)}")


class SecurityContext:
    """A configured signing context, as ``flux.security.SecurityContext``.

    ``config_pattern`` None reads the installed signing config; ``flags``
    is 0, DISABLE_PATH_PARANOIA or FORCE_PATH_PARANOIA.
    """

    def __init__(self, config_pattern: str | bytes | None = None, flags: int = 0) -> None:
        if isinstance(config_pattern, bytes):
            config_pattern = os.fsdecode(config_pattern)
        try:
            self.context = Context(flags)
            self.context.configure(config_pattern)
        except SignError as exc:
            raise _error(exc) from None

    def sign_wrap_as(
        self, userid: int, payload: str | bytes, mech_type: str | bytes | None = None,
        flags: int = 0,
    ) -> bytes:
        """J signing ``payload`` on behalf of ``userid`` (needs privilege
        for any userid but one's own with most mechanisms)."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif not isinstance(payload, bytes):
            raise TypeError(f"payload must be a text or binary type, not {type(payload)}")
        try:
            token = wrap_as(self.context, userid, payload, _mech(mech_type), flags)
        except SignError as exc:
            raise _error(exc) from None
        return token.encode("ascii")

    def sign_wrap(
        self, payload: str | bytes, mech_type: str | bytes | None = None, flags: int = 0
    ) -> bytes:
        """J signing ``payload`` as the real uid."""
        return self.sign_wrap_as(os.getuid(), payload, mech_type, flags)

    def sign_unwrap(self, signed_payload: bytes, flags: int = 0) -> tuple[bytes, int]:
        """Verify J (``sign.allowed-types`` enforced; NOVERIFY skips the
        signature); its payload and the userid it was signed for."""
        if not isinstance(signed_payload, bytes):
            raise TypeError(
                f"signed_payload must be a binary type, not {type(signed_payload)}")
        try:
            got = unwrap(self.context, signed_payload, flags)
        except SignError as exc:
            raise _error(exc) from None
        return got.payload, got.userid
