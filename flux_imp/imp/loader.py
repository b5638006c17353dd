"""The IMP's own importer for flux_imp's modules: byte code read directly.

The import guard (guard.py, which the launcher's bootstrap loads first)
loads this module from its path in the site directory
(``flux_imp.imp.loader``, before its packages) and installs it, before the
bootstrap imports the IMP; the finder then serves
the ``flux_imp`` package itself from that directory too (the standard one
would search sys.path for it, listing each directory).

Every IMP start imports some 20 to 45 of our modules; the standard path
finder spends about 80 us on each beyond loading it
(directory listing and mtime checks, suffix probing, loader objects), a
few milliseconds a start.  For a submodule of a flux_imp package (one
directory), this finder looks only where a package install puts the
module, ``<dir>/<name>/__init__.py`` (a package, preferred as the standard
finder does) or ``<dir>/<name>.py``, and its ``__pycache__`` byte code
(flux_imp ships no extension modules, which the standard finder would
try first: tests/test_loader.py checks).

It serves only byte code the standard loader would accept unchanged: an
unchecked timestamp pyc of this interpreter's magic number whose recorded
mtime and size match the source's.  Anything else (no pyc, a stale or
hash-based one, a namespace package, an unexpected layout) is left to the
standard finder, so the result never differs from it.  As root, both
files are first judged by the guard's rule (``judge``: root's, not
writable by others, with every directory above), as the guard judges
what the standard finder finds.

One module that is not ours comes this way too: ``__future__``, from the
standard library's directory, when the path finder would look there
first.  So this module has no ``from __future__ import``: its annotations
are strings, as in guard.py.
"""

import sys
from _frozen_importlib import ModuleSpec
from _frozen_importlib_external import MAGIC_NUMBER
from _stat import S_ISLNK, S_ISREG
from marshal import loads
from posix import O_CLOEXEC, O_NOFOLLOW, O_RDONLY, close, fstat, lstat, read
from posix import open as open_fd

TYPE_CHECKING = False  # annotations only (mypy reads this as true)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from os import stat_result
    from types import CodeType, ModuleType
    from typing import Any

    # The guard's judge(path, st): st is path's lstat() (or what it opens).
    Judge = Callable[[str, stat_result], None]

_TAG = sys.implementation.cache_tag
_PREFIX = "flux_imp."


class Loader:
    """Executes the code object the finder already read (its loader_state)."""

    @staticmethod
    def create_module(spec: ModuleSpec) -> None:
        return None  # the default module object

    @staticmethod
    def exec_module(module: "ModuleType") -> None:
        spec = module.__spec__
        assert spec is not None
        code, spec.loader_state = spec.loader_state, None
        exec(code, module.__dict__)  # noqa: S102 - our own byte code, judged
        if spec.name == __package__:
            # Loaded before their package (by the launcher's bootstrap): bound
            # to it, as an import after the package would have.
            for name in ("guard", "loader"):
                early = sys.modules.get(f"{__package__}.{name}")
                if early is not None:
                    setattr(module, name, early)


def _code(st: "stat_result", pyc: str, judge: "Judge | None") -> "CodeType | None":
    """``pyc``'s code if the standard loader would take it for a source
    file of status ``st`` (and, as root, ``judge`` accepts it)."""
    # Not open(): its buffering costs 5 more system calls a file.  A symlink
    # (ELOOP) is the standard finder's, which judges where it leads.
    try:
        fd = open_fd(pyc, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    except OSError:
        return None
    try:
        found = fstat(fd)
        if not S_ISREG(found.st_mode):
            return None
        if judge is not None:
            judge(pyc, found)  # the very file read next, by its own status
        data = read(fd, found.st_size + 1)
    except OSError:
        return None
    finally:
        close(fd)
    # The header: magic, flags (0: timestamp-based), source mtime, source size.
    if (len(data) != found.st_size or data[:4] != MAGIC_NUMBER or data[4:8] != b"\0\0\0\0"
            or int.from_bytes(data[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
            or int.from_bytes(data[12:16], "little") != st.st_size & 0xFFFFFFFF):
        return None
    code: CodeType = loads(memoryview(data)[16:])  # noqa: S302 - root's own pyc, judged
    return code


def _stdlib_first() -> "str | None":
    """The standard library's directory if the path finder would search it
    first for a top-level module (every sys.path entry before it is
    absent), else None: where ``__future__`` is.

    Every module of ours begins ``from __future__ import annotations``,
    which imports that file at run time: the first one, through the path
    finder, which lists the whole directory, cost 0.2 ms a start here.
    This interpreter's ``sys._stdlib_dir`` (3.11 on; before, None)."""
    stdlib: str | None = getattr(sys, "_stdlib_dir", None)
    for entry in sys.path:
        if entry == stdlib:
            return stdlib
        try:
            lstat(entry)
        except OSError:
            continue  # absent (python3XY.zip): the path finder finds nothing there
        return None
    return None


class Finder:
    """A meta path finder for flux_imp's submodules; None defers to the rest."""

    judge: "Judge | None" = None
    top: "str | None" = None  # the site directory that holds flux_imp

    @classmethod
    def find_spec(cls, name: str, path: "Sequence[str] | None" = None,
                  target: object = None) -> "ModuleSpec | None":
        if path is None:
            if name == "flux_imp" and cls.top is not None:
                base = cls.top  # the package the launcher was built for, nowhere else
            elif name == "__future__" and (stdlib := _stdlib_first()) is not None:
                base = stdlib
            else:
                return None
        elif len(path) != 1 or not name.startswith(_PREFIX):
            return None
        else:
            base = path[0]
        last = name.rpartition(".")[2]
        package = f"{base}/{last}"
        for source, pyc, is_package in (
            (f"{package}/__init__.py", f"{package}/__pycache__/__init__.{_TAG}.pyc", True),
            (f"{package}.py", f"{base}/__pycache__/{last}.{_TAG}.pyc", False),
        ):
            try:
                st = lstat(source)
            except OSError:
                continue
            if S_ISLNK(st.st_mode):
                return None  # the standard finder's: judged where it leads
            if cls.judge is not None:
                cls.judge(source, st)
            code = _code(st, pyc, cls.judge)
            if code is None:
                return None
            loader: Any = Loader  # the protocol's two methods, not importlib.abc's class
            spec = ModuleSpec(name, loader, origin=source, loader_state=code,
                              is_package=is_package)
            spec.cached = pyc
            spec.has_location = True  # __file__ and __cached__ as usual
            if is_package:
                spec.submodule_search_locations = [package]
            return spec
        return None


def install(judge: "Judge | None", top: "str | None" = None) -> None:
    """Put the finder first; ``judge`` (the guard's, as root) sees each file;
    ``top``, if given, is where the ``flux_imp`` package is."""
    Finder.judge = judge
    Finder.top = top
    sys.meta_path.insert(0, Finder)
