"""``flux-imp version`` (unprivileged half only)."""

from __future__ import annotations

import sys

from ... import __version__
from ...fs import is_file, read_file

TYPE_CHECKING = False  # annotations only (mypy reads this as true)
if TYPE_CHECKING:
    from ..state import Imp


# What glibc's dlopen() searches for a bare soname after its cache (on
# 64-bit multiarch systems; the cache covers the rest).
_MULTIARCH = getattr(sys.implementation, "_multiarch", "")
_DEFAULT_DIRS = (f"/lib/{_MULTIARCH}", f"/usr/lib/{_MULTIARCH}", "/lib64", "/usr/lib64",
                 "/lib", "/usr/lib")
_PAM = "libpam.so.0"


def pam_available() -> bool:
    """Whether this IMP can open PAM sessions: libpam.so.0 is where the
    dynamic linker finds it (ld.so.cache or a default directory), so
    privileged/contain/pam.py's dlopen of that soname would load it.

    Only looked up, not loaded: loading libpam (and ctypes' core to do it)
    would cost this command 3.5 ms, more than the rest of it."""
    try:
        cache = read_file("/etc/ld.so.cache")
    except OSError:
        cache = b""
    # The cache's string table holds each library's path, NUL-terminated
    # (found, not split: splitting the whole table costs 1.7 ms).
    suffix = f"/{_PAM}\0".encode()
    at = cache.find(suffix)
    while at >= 0:
        path = cache[cache.rfind(b"\0", 0, at) + 1 : at + len(suffix) - 1]
        if path.startswith(b"/") and is_file(path):
            return True
        at = cache.find(suffix, at + 1)
    return any(is_file(f"{d}/{_PAM}") for d in _DEFAULT_DIRS)


def child(imp: Imp) -> None:
    sys.stdout.write(f"flux-imp v{__version__}\n")
    if pam_available():
        sys.stdout.write("+pam\n")
