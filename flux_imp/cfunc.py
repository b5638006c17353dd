"""Calling C functions: the little of ctypes the IMP needs, on ``_ctypes`` alone.

``import ctypes`` costs every process that does it milliseconds beyond
its compiled core ``_ctypes`` (``struct``, ``ctypes._endian``, dozens of
classes), and the IMP's two halves would pay that on every ``exec``.
This module declares the same few C types as ctypes does (a
``_SimpleCData`` subclass with its ``_type_`` code) and binds a function
as ctypes' ``CFUNCTYPE`` does (a ``CFuncPtr`` subclass with ``_argtypes_``,
``_restype_`` and ``_flags_``, made from the symbol's address).  The C
types are ctypes' own for mypy: the same definitions, so the same
behaviour.  Structures, callbacks and the rest stay with ctypes.
"""

from __future__ import annotations

import _ctypes
from _ctypes import POINTER, addressof, byref, get_errno, set_errno, sizeof

__all__ = [
    "POINTER", "Library", "addressof", "byref", "c_char", "c_char_p", "c_int", "c_long",
    "c_time_t", "c_uint", "c_void_p", "get_errno", "set_errno", "sizeof", "string_at",
    "string_buffer",
]  # fmt: skip

TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from collections.abc import Sequence
    from ctypes import Array, c_char, c_char_p, c_int, c_long, c_uint, c_void_p
    from ctypes import c_long as c_time_t
    from typing import Any
else:
    # As Lib/ctypes/__init__.py declares them (type codes as in struct).
    class c_int(_ctypes._SimpleCData):
        _type_ = "i"

    class c_uint(_ctypes._SimpleCData):
        _type_ = "I"

    class c_long(_ctypes._SimpleCData):
        _type_ = "l"

    class c_char(_ctypes._SimpleCData):
        _type_ = "c"

    class c_char_p(_ctypes._SimpleCData):  # char *: bytes up to the NUL, or None
        _type_ = "z"

    class c_void_p(_ctypes._SimpleCData):  # void *: an int, or None for NULL
        _type_ = "P"

    class c_time_t(_ctypes._SimpleCData):
        # ctypes 3.12+ picks it by _ctypes.SIZEOF_TIME_T; before, c_long
        # (what time_t is on Linux unless a 32-bit ABI chose 64-bit time).
        _type_ = "q" if getattr(_ctypes, "SIZEOF_TIME_T", 0) == 8 else "l"


class Library:
    """A shared library loaded as ``ctypes.CDLL(soname)`` loads it:
    dlopen(3) with RTLD_NOW | RTLD_LOCAL (``_ctypes.dlopen`` adds RTLD_NOW);
    ``None`` is the process itself (libc).  Never closed, as with ctypes.
    OSError with dlerror(3)'s text if it cannot be loaded."""

    __slots__ = ("handle",)

    def __init__(self, soname: str | None) -> None:
        # Callers pass a bare soname: ld.so's search, nothing from the caller.
        # None is dlopen(NULL), which typeshed's stub leaves out.
        self.handle: int = _ctypes.dlopen(soname, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]

    def function(
        self,
        name: str,
        restype: type[Any] | None,
        argtypes: Sequence[type[Any]],
        *,
        use_errno: bool = False,
    ) -> _ctypes.CFuncPtr:
        """The C function ``name`` returning ``restype`` (None: void) with
        the fixed arguments ``argtypes`` (a variadic function takes more,
        each passed as an instance of its C type).  With ``use_errno`` the
        call swaps errno with ctypes' private copy: read it with get_errno()
        (OSError if the symbol is missing)."""
        flags = _ctypes.FUNCFLAG_CDECL | (_ctypes.FUNCFLAG_USE_ERRNO if use_errno else 0)
        proto = type(name, (_ctypes.CFuncPtr,), {
            "_argtypes_": tuple(argtypes), "_restype_": restype, "_flags_": flags,
        })  # fmt: skip
        func: _ctypes.CFuncPtr = proto(_ctypes.dlsym(self.handle, name))
        return func

    def variable(self, ctype: type[Any], name: str) -> Any:
        """The global variable ``name`` as a ``ctype`` living at its address
        (``ctype.in_dll``): setting ``.value`` writes the variable."""
        return ctype.from_address(_ctypes.dlsym(self.handle, name))


def string_buffer(size: int) -> Array[c_char]:
    """``size`` zeroed bytes of writable C memory (``create_string_buffer(size)``)."""
    return (c_char * size)()


def string_at(address: int, size: int = -1) -> bytes:
    """The bytes at ``address``: ``size`` of them, or up to the first NUL."""
    if size < 0:
        value: bytes | None = c_char_p(address).value
        return value or b""
    return (c_char * size).from_address(address).raw
