"""Job-request signing, byte-compatible with flux-security's libflux-security.

Needs no privilege.  Mechanisms are imported only when used.

The names below are imported on first use (PEP 562): every IMP command
imports ``flux_imp.sign.kv``, which runs this file, and most commands never
sign or verify.
"""

from __future__ import annotations

# flux_security_create() flags; at most one may be given.  Defined here (and
# re-exported by .context) so that the IMP config, which needs the first,
# does not import the signing context for every command.
DISABLE_PATH_PARANOIA = 0x1
FORCE_PATH_PARANOIA = 0x2

TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from .context import Context
    from .errors import SignError
    from .security import SecurityContext
    from .token import NOVERIFY, Unwrapped, unwrap, unwrap_anymech, wrap, wrap_as

__all__ = [
    "DISABLE_PATH_PARANOIA",
    "FORCE_PATH_PARANOIA",
    "NOVERIFY",
    "Context",
    "SecurityContext",
    "SignError",
    "Unwrapped",
    "unwrap",
    "unwrap_anymech",
    "wrap",
    "wrap_as",
]

# name -> the submodule that defines it
_LAZY = {
    "Context": "context",
    "SecurityContext": "security",  # flux-core's flux.security API
    "SignError": "errors",
    "NOVERIFY": "token",
    "Unwrapped": "token",
    "unwrap": "token",
    "unwrap_anymech": "token",
    "wrap": "token",
    "wrap_as": "token",
}


def __getattr__(name: str) -> object:
    submodule = _LAZY.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = __import__(f"{__name__}.{submodule}", fromlist=(name,))
    value: object = getattr(module, name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
