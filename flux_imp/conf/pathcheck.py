"""Is a file, and the directory holding it, safe to trust?

Mirrors flux-security's ``path_is_secure()``: the same checks in the same
order with the same texts, because the IMP prints them and tests grep for
them.  Unprivileged, ownership is judged against the *effective* ids, as
upstream: a file owned by the instance owner, or group-writable by its
group, passes, and only the immediate parent directory is checked.

Privileged (euid 0), only root is trusted, because the effective gid of a
setuid IMP is the caller's: the file and its parent must be owned by root
and writable by neither group nor others (a sticky parent excepted).  So
must every directory searched on the way to the parent, symlinks followed,
unless the IMP is a test build (``use_test_build_rule()``): upstream's test
scripts keep a root-owned test directory inside a user-owned one.
"""

from __future__ import annotations

import errno
import posix
from _stat import S_IMODE, S_ISDIR, S_ISLNK, S_ISREG, S_ISVTX, S_IWGRP, S_IWOTH

from ..fs import dirname, join

# Upstream copies the path into a PATH_MAX + 1 byte buffer before dirname().
_PATH_BUF = 4096 + 1
_MAXSYMLINKS = 40  # the kernel's limit for one lookup

# Privileged checks cover every directory up to "/" unless a test build says not.
_whole_tree = True


class PathError(Exception):
    """Why a path is not secure; ``text`` is upstream's message."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)


def use_test_build_rule() -> None:
    """From now on, privileged checks stop at the immediate parent, as
    upstream's do.  A test build of the IMP calls this before any check;
    the default (every directory) fails closed."""
    global _whole_tree
    _whole_tree = False


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


def _others_may_write(st: posix.stat_result, trusted_gids: tuple[int, ...]) -> str | None:
    """``group`` or ``world`` if users other than the trusted ones may replace
    a directory's entries, else None."""
    # The sticky bit stops other writers from replacing our file.
    if st.st_mode & S_ISVTX:
        return None
    if st.st_mode & S_IWGRP and st.st_gid not in trusted_gids:
        return "group"
    if st.st_mode & S_IWOTH:
        return "world"
    return None


def _check_parent(path: str, trusted_gids: tuple[int, ...]) -> str:
    """Upstream's check of the immediate parent; its name."""
    if len(path.encode("utf-8", "surrogateescape")) >= _PATH_BUF:
        raise PathError("Unable to get dirname")
    parent = c_dirname(path)
    try:
        st = posix.lstat(parent)
    except OSError:
        raise PathError("Unable to stat parent directory") from None
    # lstat: a symlinked parent is refused as "unexpected file type".
    if not S_ISDIR(st.st_mode):
        raise PathError("Unable to check parent directory. Unexpected file type")
    if st.st_uid not in (0, posix.geteuid()):
        raise PathError("Invalid ownership on parent directory")
    how = _others_may_write(st, trusted_gids)
    if how is not None:
        raise PathError(f"parent directory is {how}-writable without sticky bit")
    return parent


def _searched_directories(path: str) -> list[str]:
    """Every directory a lookup of ``path`` searches for a name, in order,
    following symlinks as the kernel does; ``path`` itself is not one."""
    todo = path.split("/")[::-1]  # components left, the next one last
    try:
        # A relative lookup starts at the cwd: what is above it is not searched.
        here = "/" if path.startswith("/") else posix.getcwd()
    except OSError:
        raise PathError("Unable to stat ancestor directory .") from None
    searched: list[str] = []
    links = 0
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if here not in searched:
            searched.append(here)
        if name == "..":
            here = dirname(here)  # ``here`` is real: no symlink to undo
            continue
        entry = join(here, name)
        try:
            if not S_ISLNK(posix.lstat(entry).st_mode):
                here = entry
                continue
            target = posix.readlink(entry)
        except OSError:
            raise PathError(f"Unable to stat ancestor directory {entry}") from None
        links += 1
        if links > _MAXSYMLINKS:
            raise PathError(posix.strerror(errno.ELOOP))
        if target.startswith("/"):
            here = "/"
        todo += target.split("/")[::-1]
    return searched


def _check_ancestors(directory: str) -> None:
    """The root-only rule for every directory on the way to ``directory``."""
    for ancestor in _searched_directories(directory):
        try:
            st = posix.lstat(ancestor)  # a real directory: the walk resolved every link
        except OSError:
            raise PathError(f"Unable to stat ancestor directory {ancestor}") from None
        if st.st_uid != 0:
            raise PathError(f"Invalid ownership on ancestor directory {ancestor}")
        how = _others_may_write(st, ())
        if how is not None:
            raise PathError(f"ancestor directory {ancestor} is {how}-writable without sticky bit")


def path_is_secure(path: str) -> None:
    """Raise PathError unless ``path`` and the directories that hold it are
    safe to trust (see the module docstring for which and how)."""
    # A C string ends at the first NUL; posix.stat() would raise ValueError.
    path = path.split("\0", 1)[0]
    if not path:
        raise PathError("Filename not defined")
    try:
        is_link = S_ISLNK(posix.lstat(path).st_mode)
    except OSError:
        is_link = False
    try:
        st = posix.stat(path)
    except OSError as exc:
        raise PathError(posix.strerror(exc.errno or 0)) from None
    # Upstream tests the target's type before refusing the link itself.
    if not S_ISREG(st.st_mode):
        raise PathError("File is not a regular file")
    if is_link:
        raise PathError("symbolic link")
    if st.st_uid not in (0, posix.geteuid()):
        raise PathError("insecure file ownership")
    privileged = posix.geteuid() == 0
    # Upstream trusts the effective group with the file, and group 0 too
    # with its parent; root trusts no group.
    egid = posix.getegid()
    if st.st_mode & S_IWOTH or (
        st.st_mode & S_IWGRP and (privileged or st.st_gid != egid)
    ):
        raise PathError(f"bad file permissions ({S_IMODE(st.st_mode):04o})")
    parent = _check_parent(path, () if privileged else (0, egid))
    if privileged and _whole_tree:
        _check_ancestors(parent)
