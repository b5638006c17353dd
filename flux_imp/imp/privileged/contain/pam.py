"""The job's PAM session (upstream src/imp/exec/pam.c), through libpam.so.0.

Service ``flux``, PAM_USER and PAM_RUSER the target user; the privileged
parent establishes credentials and opens the session before it forks the
shell (so what modules such as pam_limits set is inherited) and closes it
once the job is gone.  No authentication or account step, as upstream.

Unlike upstream's text conversation (misc_conv, which would prompt on the
job's terminal from a root process), ours never answers a prompt: a stack
that asks for input fails.  Modules' messages are logged.
"""

from __future__ import annotations

import ctypes
import posix
from typing import Any

from ...log import die, log

SERVICE = b"flux"
_SUCCESS, _CONV_ERR = 0, 19
_USER, _RUSER = 2, 8  # pam_set_item types
_ESTABLISH_CRED, _DELETE_CRED = 0x2, 0x4
_ERROR_MSG, _TEXT_INFO = 3, 4  # message styles that need no answer


class _Message(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class _Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


_CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int,
                         ctypes.POINTER(ctypes.POINTER(_Message)),
                         ctypes.POINTER(ctypes.POINTER(_Response)), ctypes.c_void_p)


class _Conv(ctypes.Structure):
    _fields_ = [("conv", _CONV), ("appdata_ptr", ctypes.c_void_p)]


def load() -> ctypes.CDLL | None:
    """libpam's functions, or None where it is not installed.

    libpam is loaded into the global scope and its functions looked up
    there, as a program linked against it would find them: so a preloaded
    pam_wrapper (a test build run by root, as upstream's PAM tests do)
    comes first.  An installed build never lets LD_PRELOAD through."""
    try:
        ctypes.CDLL("libpam.so.0", mode=posix.RTLD_GLOBAL)
    except OSError:
        return None
    return ctypes.CDLL(None)


def _converse(count: int, messages: Any, responses: Any, _: object) -> int:
    """Log what modules say; refuse every prompt (there is nobody to ask)."""
    styles = [(messages[i].contents.msg_style, messages[i].contents.msg or b"")
              for i in range(count)]
    for style, text in styles:
        if style not in (_ERROR_MSG, _TEXT_INFO):
            return _CONV_ERR
        (log.warn if style == _ERROR_MSG else log.info)(f"pam: {text.decode(errors='replace')}")
    # PAM frees the answers with free(3): they must come from malloc.
    libc = ctypes.CDLL(None)
    libc.calloc.restype = ctypes.c_void_p
    array = libc.calloc(max(count, 1), ctypes.sizeof(_Response))
    if not array:
        return _CONV_ERR
    responses[0] = ctypes.cast(array, ctypes.POINTER(_Response))
    return _SUCCESS


class Session:
    """An open PAM session for one job."""

    def __init__(self, lib: ctypes.CDLL, user: str) -> None:
        self.lib = lib
        self.handle = ctypes.c_void_p()
        self.conv_fn = _CONV(_converse)  # must outlive the handle
        self.conv = _Conv(self.conv_fn, None)
        lib.pam_strerror.restype = ctypes.c_char_p
        lib.pam_strerror.argtypes = [ctypes.c_void_p, ctypes.c_int]
        for name in ("pam_setcred", "pam_open_session", "pam_close_session", "pam_end"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.pam_set_item.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
        user_name = user.encode()
        rc = lib.pam_start(SERVICE, user_name, ctypes.byref(self.conv), ctypes.byref(self.handle))
        if rc != _SUCCESS:
            self._fail("pam_start", rc, end=False)
        for item, what in ((_USER, "USER"), (_RUSER, "RUSER")):
            rc = lib.pam_set_item(self.handle, item, user_name)
            if rc != _SUCCESS:
                self._fail(f"pam_set_item {what}", rc)
        rc = lib.pam_setcred(self.handle, _ESTABLISH_CRED)
        if rc != _SUCCESS:
            self._fail("pam_setcred", rc)
        rc = lib.pam_open_session(self.handle, 0)
        if rc != _SUCCESS:
            lib.pam_setcred(self.handle, _DELETE_CRED)
            self._fail("pam_open_session", rc)

    def _text(self, rc: int) -> str:
        text = self.lib.pam_strerror(self.handle, rc)
        return text.decode(errors="replace") if text else f"error {rc}"

    def _fail(self, what: str, rc: int, end: bool = True) -> None:
        log.warn(f"{what}: {self._text(rc)}")
        if end:
            self.lib.pam_end(self.handle, rc)
        die("exec: PAM stack failure")

    def close(self) -> None:
        """Close the session, delete credentials, end PAM (warnings only)."""
        rc = self.lib.pam_close_session(self.handle, 0)
        if rc != _SUCCESS:
            log.warn(f"pam_close_session: {self._text(rc)}")
        rc = self.lib.pam_setcred(self.handle, _DELETE_CRED)
        if rc != _SUCCESS:
            log.warn(f"pam_setcred: {self._text(rc)}")
        rc = self.lib.pam_end(self.handle, rc)
        if rc != _SUCCESS:
            log.warn(f"pam_end: {rc}")
