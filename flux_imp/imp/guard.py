"""The import guard: nothing root imports may be changeable by anyone but root.

The launcher (packaging/launcher/flux-imp.c) loads this module by its path
in SITEDIR first, once it has judged this file, its byte code and every
directory above them by its check_root_only(), and calls :func:`start`.
As root, the guard stands in for the interpreter's path finder, so each
module file Python is about to load (source, bytecode, extension module)
is judged before it is read, with every directory above it, by the same
rule: root's, not writable by group or others (sticky directories
excepted: each file is judged by its own owner).  Symlinks are judged
where they lead (posixpath, and so os, is imported only then: os costs
every start 2 ms).  It covers the standard library and every dependency,
whatever they are.  The modules Python loaded before this ran (the
encodings package) are judged first: too late to stop them, but nothing
more runs.  A file that is absent is judged by the directory that could
gain it.  judge(path, st) takes the file's lstat() (or the fstat() of it
opened O_NOFOLLOW) from a caller that has it: the loader, one system call
less a file.

flux_imp's own modules then load through loader.py, which reads their
byte code directly and, as root, has judge() see each file first; the
loader is loaded from its path in SITEDIR, judged as the guard judges what
the path finder finds.

Until start() has replaced the path finder, nothing may be imported from
a file: this module imports only what the interpreter has loaded already
(builtin and frozen modules), and so has no ``from __future__ import``
(that is a file): its annotations are strings.  A module here, not Python
in the launcher's C: the interpreter compiles none of it at each start
(0.25 ms), and it is linted, type-checked and tested as the rest is.
"""

import sys
from _frozen_importlib import _load  # type: ignore[attr-defined]  # private, not in the stubs
from _frozen_importlib_external import PathFinder, spec_from_file_location
from _stat import S_ISDIR, S_ISLNK, S_ISVTX
from posix import _exit, geteuid, lstat, write

TYPE_CHECKING = False  # annotations only (mypy reads this as true)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from os import stat_result
    from types import ModuleType

_judged: "set[str]" = set()


def judge(path: str, st: "stat_result | None" = None) -> None:
    """Exit at once unless ``path`` and every directory above it are
    root's and writable by neither group nor others (sticky directories
    excepted); ``st`` is its lstat() if the caller has it."""
    while path not in _judged:
        _judged.add(path)
        found: stat_result | None = st
        if found is None:
            try:  # noqa: SIM105 - contextlib is a file: not imported before the guard
                found = lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                pass  # absent: judged by the directory that could gain it
        if found is None:
            pass
        elif S_ISLNK(found.st_mode):
            from posixpath import realpath  # imported through the guard

            judge(realpath(path))
        elif found.st_uid != 0 or (found.st_mode & 0o22
                                   and not (S_ISDIR(found.st_mode) and found.st_mode & S_ISVTX)):
            write(2, b"flux-imp: Fatal: " + path.encode("utf-8", "surrogateescape")
                  + b": not owned by root, or writable by group or others\n")
            _exit(1)
        path, st = path.rpartition("/")[0] or "/", None


def judged_spec(spec: "ModuleSpec | None") -> "ModuleSpec | None":
    """``spec``, once its files (source and byte code) are judged."""
    if spec is not None and spec.has_location:
        assert spec.origin is not None  # has_location: a file
        judge(spec.origin)
        if spec.cached:
            judge(spec.cached)
    return spec


class RootOnlyPathFinder:
    """The path finder, each find judged."""

    @staticmethod
    def find_spec(name: str, path: "Sequence[str] | None" = None,
                  target: "ModuleType | None" = None) -> "ModuleSpec | None":
        return judged_spec(PathFinder.find_spec(name, path, target))


def start(sitedir: str) -> None:
    """As root, judge what is loaded and guard what will be; then load and
    install flux_imp's loader from ``sitedir`` (on sys.path already)."""
    root = geteuid() == 0
    if root:
        for module in list(sys.modules.values()):
            judged_spec(getattr(module, "__spec__", None))
        sys.meta_path[sys.meta_path.index(PathFinder)] = RootOnlyPathFinder
    spec = spec_from_file_location("flux_imp.imp.loader", f"{sitedir}/flux_imp/imp/loader.py")
    if root:
        judged_spec(spec)
    assert spec is not None  # a .py path always has a spec
    _load(spec).install(judge if root else None, sitedir)
