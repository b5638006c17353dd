"""The file-system questions the IMP asks of ``os`` and ``os.path``, on the
builtin ``posix`` alone.

Importing ``os`` costs every IMP start about 2 ms here (its
``_collections_abc`` builds dozens of ABCs), so no module an IMP command
loads imports it: they call ``posix`` directly (``os`` re-exports it) and
these few helpers, which keep ``os.path``'s meaning for what they are given.
"""

from __future__ import annotations

import posix
from _stat import S_ISDIR, S_ISREG


def fsencode(path: str) -> bytes:
    """``os.fsencode``: the launcher runs Python in C.UTF-8, whose file-system
    encoding is UTF-8 with surrogateescape."""
    return path.encode("utf-8", "surrogateescape")


def fsdecode(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


def _mode(path: str | bytes, follow: bool = True) -> int | None:
    """The file's st_mode (of a symlink itself unless ``follow``), None if
    there is none to stat, as os.path's queries take every OSError."""
    try:
        return (posix.stat if follow else posix.lstat)(path).st_mode
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None


def is_dir(path: str | bytes) -> bool:
    """``os.path.isdir``: a directory, or a symlink to one."""
    mode = _mode(path)
    return mode is not None and S_ISDIR(mode)


def is_file(path: str | bytes) -> bool:
    """``os.path.isfile``: a regular file, or a symlink to one."""
    mode = _mode(path)
    return mode is not None and S_ISREG(mode)


def exists(path: str) -> bool:
    """``os.path.exists``: symlinks followed."""
    return _mode(path) is not None


def lexists(path: str) -> bool:
    """``os.path.lexists``: a dangling symlink exists too."""
    return _mode(path, follow=False) is not None


def same_file(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` both exist and are one file (device and inode)."""
    try:
        sa, sb = posix.stat(a), posix.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def read_file(path: str) -> bytes:
    """The whole file, read with posix calls: open() would build a buffered
    file object (and the first one in a process costs 40 us more)."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        return read_all(fd)
    finally:
        posix.close(fd)


def read_all(fd: int) -> bytes:
    """What ``fd`` holds, read to its end."""
    chunks = []
    while chunk := posix.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def join(head: str, tail: str) -> str:
    """``os.path.join`` of two parts: an absolute ``tail`` replaces ``head``."""
    if tail.startswith("/") or not head:
        return tail
    return head + tail if head.endswith("/") else f"{head}/{tail}"


def dirname(path: str) -> str:
    """``os.path.dirname``: trailing slashes of the head dropped, unless it is all slashes."""
    head = path[: path.rfind("/") + 1]
    return head if head == "/" * len(head) else head.rstrip("/")


def basename(path: str) -> str:
    return path[path.rfind("/") + 1 :]
