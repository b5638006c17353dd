"""Is a file, and the directory holding it, safe to trust?

Mirrors flux-security's ``path_is_secure()``: the same checks in the same
order with the same texts, because the IMP prints them and tests grep for
them.  Ownership is judged against the *effective* ids, so a file owned by
the instance owner is accepted when the IMP runs unprivileged.  Only the
immediate parent directory is checked, as upstream does.
"""

from __future__ import annotations

import os
import stat

# Upstream copies the path into a PATH_MAX + 1 byte buffer before dirname().
_PATH_BUF = 4096 + 1


class PathError(Exception):
    """Why a path is not secure; ``text`` is upstream's message."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)


def c_dirname(path: str) -> str:
    """glibc dirname(3): ``foo`` -> ``.``, ``/foo`` -> ``/``, ``//foo`` -> ``//``.

    Differs from os.path.dirname on trailing slashes (``a/b/`` -> ``a``),
    on relative names and on a leading ``//``, which POSIX keeps.
    """
    last = path.rfind("/")
    if 0 < last == len(path) - 1:
        # Trailing slashes do not start the last component: look before them.
        run = last
        while run > 0 and path[run - 1] == "/":
            run -= 1
        if run > 0:
            last = path.rfind("/", 0, run)
    if last < 0:
        return "."
    run = last
    while run > 0 and path[run - 1] == "/":
        run -= 1
    if run == 0:
        return "//" if last == 1 else "/"
    return path[:run]


def _check_parent(path: str) -> None:
    if len(path.encode("utf-8", "surrogateescape")) >= _PATH_BUF:
        raise PathError("Unable to get dirname")
    try:
        st = os.lstat(c_dirname(path))
    except OSError:
        raise PathError("Unable to stat parent directory") from None
    # lstat: a symlinked parent is refused as "unexpected file type".
    if not stat.S_ISDIR(st.st_mode):
        raise PathError("Unable to check parent directory. Unexpected file type")
    if st.st_uid not in (0, os.geteuid()):
        raise PathError("Invalid ownership on parent directory")
    # The sticky bit stops other writers from replacing our file, so a
    # writable parent is fine with it.  Group 0 is trusted, unlike for files.
    sticky = st.st_mode & stat.S_ISVTX
    if st.st_gid not in (0, os.getegid()) and st.st_mode & stat.S_IWGRP and not sticky:
        raise PathError("parent directory is group-writable without sticky bit")
    if st.st_mode & stat.S_IWOTH and not sticky:
        raise PathError("parent directory is world-writable without sticky bit")


def path_is_secure(path: str) -> None:
    """Raise PathError unless ``path`` and its parent are safe to trust."""
    # A C string ends at the first NUL; os.stat() would raise ValueError.
    path = path.split("\0", 1)[0]
    if not path:
        raise PathError("Filename not defined")
    try:
        is_link = stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        is_link = False
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PathError(os.strerror(exc.errno or 0)) from None
    # Upstream tests the target's type before refusing the link itself.
    if not stat.S_ISREG(st.st_mode):
        raise PathError("File is not a regular file")
    if is_link:
        raise PathError("symbolic link")
    if st.st_uid not in (0, os.geteuid()):
        raise PathError("insecure file ownership")
    if st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != os.getegid()):
        raise PathError(f"bad file permissions ({stat.S_IMODE(st.st_mode):04o})")
    _check_parent(path)
