"""What the setuid launcher hands over: the caller's environment and umask.

The launcher (``packaging/launcher/flux-imp.c``) starts the interpreter with
an environment of its own (``LC_ALL=C.UTF-8`` only) and passes what the
caller had as data on fd 3, a memfd holding::

    b"flux-imp-launch 1\\0"
    b"umask=<4 octal digits>\\0"
    b"envc=<decimal count>\\0"
    <count> environ strings, each followed by b"\\0", in the caller's order

When the IMP runs without the launcher (``python -m``, unprivileged) there
is no such fd and the interpreter's own environment and umask are the
caller's.  ``via_launcher`` says which case applied; it is not a proof of
privilege (privilege is the effective uid).

Call :func:`read_launch_data` once, at start-up: it closes fd 3.
"""

from __future__ import annotations

import os
import re
import stat
from typing import NamedTuple

LAUNCH_FD = 3
MAGIC = b"flux-imp-launch 1\0"
# Data starting with this is ours; any other version or layout is an error.
_IDENT = b"flux-imp-launch"
# Linux caps argv plus environ at 6 MiB; anything bigger is not ours.
_MAX_SIZE = 64 * 1024 * 1024

_UMASK = re.compile(rb"umask=([0-7]{4})")
_ENVC = re.compile(rb"envc=(0|[1-9][0-9]{0,8})")


class LaunchDataError(Exception):
    """fd 3 claims to hold launch data but it is malformed."""


class LaunchData(NamedTuple):
    """The caller's environment (``K=V`` bytes, caller order) and umask."""

    environ: list[bytes]
    umask: int
    via_launcher: bool


def read_launch_data(fd: int = LAUNCH_FD) -> LaunchData:
    """Take the launch data from ``fd`` (closing it), else describe this process.

    ``fd`` holds launch data when it is a regular file (a memfd) starting
    with the launcher's identifier; it is then read whole and parsed
    strictly (:class:`LaunchDataError` on any defect).  Otherwise ``fd`` is
    left untouched and the interpreter's own environment and umask are
    returned.
    """
    data = _read_if_ours(fd)
    if data is None:
        return LaunchData(
            environ=[key + b"=" + value for key, value in os.environb.items()],
            umask=_current_umask(),
            via_launcher=False,
        )
    environ, umask = parse_launch_data(data)
    return LaunchData(environ=environ, umask=umask, via_launcher=True)


def parse_launch_data(data: bytes) -> tuple[list[bytes], int]:
    """Split launch data into (environ, umask); raise on any defect."""
    if not data.startswith(MAGIC):
        raise LaunchDataError("launch data: unsupported version or bad header")
    body = data[len(MAGIC) :]
    if not body.endswith(b"\0"):
        raise LaunchDataError("launch data: truncated (no final NUL)")
    fields = body[:-1].split(b"\0")
    if len(fields) < 2:
        raise LaunchDataError("launch data: truncated (missing umask or envc)")
    umask_match = _UMASK.fullmatch(fields[0])
    if umask_match is None or int(umask_match.group(1), 8) > 0o777:
        raise LaunchDataError("launch data: bad umask field")
    envc_match = _ENVC.fullmatch(fields[1])
    if envc_match is None:
        raise LaunchDataError("launch data: bad envc field")
    environ = fields[2:]
    if len(environ) != int(envc_match.group(1)):
        raise LaunchDataError(
            f"launch data: {len(environ)} environment strings, "
            f"header says {int(envc_match.group(1))}"
        )
    return environ, int(umask_match.group(1), 8)


def _read_if_ours(fd: int) -> bytes | None:
    """The whole content of ``fd`` if it is launch data, else None."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None  # not open: run without the launcher
    if not stat.S_ISREG(st.st_mode):
        return None  # e.g. a pipe some parent left open: do not consume it
    # pread: a regular file's offset may be shared; never move it.
    if os.pread(fd, len(_IDENT), 0) != _IDENT:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := os.pread(fd, 1 << 20, size):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_SIZE:
                raise LaunchDataError("launch data: larger than 64 MiB")
    finally:
        os.close(fd)  # ours: nothing after start-up may inherit it
    return b"".join(chunks)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
