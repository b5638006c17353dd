"""Job-request signing, byte-compatible with flux-security's libflux-security.

Needs no privilege.  Mechanisms are imported only when used.
"""

from __future__ import annotations

from .context import DISABLE_PATH_PARANOIA, FORCE_PATH_PARANOIA, Context
from .errors import SignError
from .token import NOVERIFY, Unwrapped, unwrap, unwrap_anymech, wrap, wrap_as

__all__ = [
    "DISABLE_PATH_PARANOIA",
    "FORCE_PATH_PARANOIA",
    "NOVERIFY",
    "Context",
    "SignError",
    "Unwrapped",
    "unwrap",
    "unwrap_anymech",
    "wrap",
    "wrap_as",
]
