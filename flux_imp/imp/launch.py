"""What the setuid launcher hands over: the caller's environment, umask and cwd.

The launcher (``packaging/launcher/flux-imp.c``) starts the interpreter with
an environment of its own (``LC_ALL=C.UTF-8`` only) and passes what the
caller had as data on fd 3, a memfd holding::

    b"flux-imp-launch 1\\0"
    b"umask=<4 octal digits>\\0"
    b"cwd=<absolute path, or empty when unknown>\\0"
    b"envc=<decimal count>\\0"
    <count> environ strings, each followed by b"\\0", in the caller's order

When the IMP runs without the launcher (``python -m``, unprivileged) there
is no such fd and the interpreter's own environment, umask and cwd are the
caller's.  ``via_launcher`` says which case applied; it is not a proof of
privilege (privilege is the effective uid).

Call :func:`read_launch_data` once, at start-up: it closes fd 3.
"""

from __future__ import annotations

import posix
from _stat import S_ISREG

from ..fs import fsdecode

LAUNCH_FD = 3
MAGIC = b"flux-imp-launch 1\0"
# Data starting with this is ours; any other version or layout is an error.
_IDENT = b"flux-imp-launch"
# Linux caps argv plus environ at 6 MiB; anything bigger is not ours.
_MAX_SIZE = 64 * 1024 * 1024

# Fields are checked with bytes methods, not re: every command starts here,
# and importing re costs milliseconds.
_OCTAL = frozenset(b"01234567")
_DIGITS = frozenset(b"0123456789")


class LaunchDataError(Exception):
    """fd 3 claims to hold launch data but it is malformed."""


class LaunchData(tuple[list[bytes], int, bool, str]):
    """The caller's environment (``K=V`` bytes, caller order), umask and
    working directory (``""`` when unknown, e.g. deleted).

    A named tuple (``environ, umask, via_launcher, cwd``) built without
    typing or collections, whose imports would cost every command start-up
    time.
    """

    __slots__ = ()

    def __new__(
        cls, environ: list[bytes], umask: int, via_launcher: bool, cwd: str
    ) -> LaunchData:
        return tuple.__new__(cls, (environ, umask, via_launcher, cwd))

    @property
    def environ(self) -> list[bytes]:
        return self[0]

    @property
    def umask(self) -> int:
        return self[1]

    @property
    def via_launcher(self) -> bool:
        return self[2]

    @property
    def cwd(self) -> str:
        return self[3]

    def __repr__(self) -> str:
        return (f"LaunchData(environ={self.environ!r}, umask={self.umask!r}, "
                f"via_launcher={self.via_launcher!r}, cwd={self.cwd!r})")


def read_launch_data(fd: int = LAUNCH_FD) -> LaunchData:
    """Take the launch data from ``fd`` (closing it), else describe this process.

    ``fd`` holds launch data when it is a regular file (a memfd) starting
    with the launcher's identifier; it is then read whole and parsed
    strictly (:class:`LaunchDataError` on any defect).  Otherwise ``fd`` is
    left untouched and the interpreter's own environment and umask are
    returned, with its cwd (``""`` if that is gone).
    """
    data = _read_if_ours(fd)
    if data is None:
        return LaunchData(
            environ=[key + b"=" + value for key, value in posix.environ.items()],
            umask=_current_umask(),
            via_launcher=False,
            cwd=_current_cwd(),
        )
    environ, umask, cwd = parse_launch_data(data)
    return LaunchData(environ=environ, umask=umask, via_launcher=True, cwd=cwd)


def parse_launch_data(data: bytes) -> tuple[list[bytes], int, str]:
    """Split launch data into (environ, umask, cwd); raise on any defect."""
    if not data.startswith(MAGIC):
        raise LaunchDataError("launch data: unsupported version or bad header")
    body = data[len(MAGIC) :]
    if not body.endswith(b"\0"):
        raise LaunchDataError("launch data: truncated (no final NUL)")
    fields = body[:-1].split(b"\0")
    if len(fields) < 3:
        raise LaunchDataError("launch data: truncated (missing umask, cwd or envc)")
    umask = _field(fields[0], b"umask=")
    # "umask=" and exactly 4 octal digits, at most 0777.
    if umask is None or len(umask) != 4 or not _OCTAL.issuperset(umask) \
            or int(umask, 8) > 0o777:
        raise LaunchDataError("launch data: bad umask field")
    cwd = _field(fields[1], b"cwd=")
    # "cwd=" and nothing (unknown), or an absolute path.
    if cwd is None or (cwd and cwd[0] != 0x2F):
        raise LaunchDataError("launch data: bad cwd field")
    envc = _field(fields[2], b"envc=")
    # "envc=" and 0, or 1 to 9 decimal digits without a leading zero.
    if envc is None or not 1 <= len(envc) <= 9 or not _DIGITS.issuperset(envc) \
            or (envc[0] == 0x30 and len(envc) > 1):
        raise LaunchDataError("launch data: bad envc field")
    environ = fields[3:]
    if len(environ) != int(envc):
        raise LaunchDataError(
            f"launch data: {len(environ)} environment strings, header says {int(envc)}"
        )
    return environ, int(umask, 8), fsdecode(cwd)


def _field(field: bytes, name: bytes) -> bytes | None:
    """The value of ``field`` if it is ``name`` followed by the value."""
    return field[len(name) :] if field.startswith(name) else None


def _read_if_ours(fd: int) -> bytes | None:
    """The whole content of ``fd`` if it is launch data, else None."""
    try:
        st = posix.fstat(fd)
    except OSError:
        return None  # not open: run without the launcher
    if not S_ISREG(st.st_mode):
        return None  # e.g. a pipe some parent left open: do not consume it
    # pread: a regular file's offset may be shared; never move it.
    if posix.pread(fd, len(_IDENT), 0) != _IDENT:
        return None
    chunks: list[bytes] = []
    size = 0
    # Ask for what fstat says is there (and one byte more, to see the end):
    # a 1 MiB request would allocate and trim a 1 MiB buffer every time.
    want = min(max(st.st_size + 1, 4096), 1 << 20)
    try:
        while chunk := posix.pread(fd, want, size):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_SIZE:
                raise LaunchDataError("launch data: larger than 64 MiB")
    finally:
        posix.close(fd)  # ours: nothing after start-up may inherit it
    return b"".join(chunks)


def _current_cwd() -> str:
    try:
        return posix.getcwd()
    except OSError:
        return ""  # deleted: unknown, as the launcher records it


def _current_umask() -> int:
    mask = posix.umask(0o022)
    posix.umask(mask)
    return mask
