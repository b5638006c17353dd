"""``flux-imp version`` (unprivileged half only)."""

from __future__ import annotations

import os
import sys

from ... import __version__

TYPE_CHECKING = False  # annotations only (mypy reads this as true)
if TYPE_CHECKING:
    from ...sign.kv import KV
    from ..state import Imp


def pam_available() -> bool:
    """Whether this IMP can open PAM sessions: libpam.so.0 loads."""
    # What pam.load() does (ctypes.CDLL: dlopen, RTLD_NOW added by _ctypes),
    # without importing ctypes and privileged/contain/pam.py: they cost this command 1.5 ms.
    import _ctypes

    try:
        _ctypes.dlopen("libpam.so.0", os.RTLD_LOCAL)
    except OSError:
        return False
    return True


def child(imp: Imp, kv: KV) -> None:
    sys.stdout.write(f"flux-imp v{__version__}\n")
    if pam_available():
        sys.stdout.write("+pam\n")
