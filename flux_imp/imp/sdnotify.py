"""The systemd notify protocol, as upstream's src/libutil/sd_notify.c.

One datagram per message to ``NOTIFY_SOCKET``: a path (``/...``) or an
abstract name (``@...``).  The caller passes the variable's value, so the
IMP reads it from the caller's environment, never from its own.

Unlike upstream, a privileged IMP connects to a path with the caller's
file-system ids: the path is the caller's choice, so it must reach only a
socket the caller could reach itself (systemd's are writable by all).
"""

from __future__ import annotations

import errno
import posix

# sizeof(sockaddr_un.sun_path); upstream keeps room for a NUL byte.
_SUN_PATH = 108


def checked(env_value: str | None) -> bytes | None:
    """``NOTIFY_SOCKET``'s value, encoded, once judged usable (a path, or
    ``@`` and an abstract name); None if unset.  OSError with upstream's
    errno: EAFNOSUPPORT (neither ``/`` nor ``@``), E2BIG (name too long)."""
    if env_value is None:
        return None
    if not env_value.startswith(("/", "@")):
        raise OSError(errno.EAFNOSUPPORT, posix.strerror(errno.EAFNOSUPPORT))
    encoded = env_value.encode("utf-8", "surrogateescape")
    if len(encoded) >= _SUN_PATH:
        raise OSError(errno.E2BIG, posix.strerror(errno.E2BIG))
    return encoded


def notify(env_value: str | None, message: str) -> None:
    """Send ``message``; nothing to do if ``env_value`` is None.

    Raises OSError with upstream's errno: EINVAL (empty message), those of
    :func:`checked`, or whatever socket/connect/send report.
    """
    if not message:
        raise OSError(errno.EINVAL, posix.strerror(errno.EINVAL))
    address = checked(env_value)
    if address is None:
        return
    if address.startswith(b"@"):
        # Abstract: a leading NUL, and the length covers the name only.
        address = b"\0" + address[1:]
    data = message.encode("utf-8", "surrogateescape")
    import socket  # only under systemd: keep it off the common exec path

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        if posix.geteuid() == 0 and not address.startswith(b"\0"):
            from .creds import with_fs_ids

            with_fs_ids(posix.getuid(), posix.getgid(), lambda: sock.connect(address))
        else:
            sock.connect(address)  # abstract names have no permissions to check
        if sock.send(data) != len(data):
            raise OSError(errno.EPROTO, posix.strerror(errno.EPROTO))


def sd_notify(env_value: str | None, message: str) -> bool:
    """Like :func:`notify`, but False on failure instead of raising."""
    try:
        notify(env_value, message)
    except OSError:
        return False
    return True
