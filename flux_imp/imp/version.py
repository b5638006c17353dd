"""``flux-imp version`` (unprivileged half only)."""

from __future__ import annotations

import sys

from .. import __version__
from ..sign.kv import KV
from .state import Imp


def pam_available() -> bool:
    """Whether this IMP can open PAM sessions: libpam.so.0 loads."""
    from .pam import load  # ctypes: only for this command and PAM itself

    return load() is not None


def child(imp: Imp, kv: KV) -> None:
    sys.stdout.write(f"flux-imp v{__version__}\n")
    if pam_available():
        sys.stdout.write("+pam\n")
