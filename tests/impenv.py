"""The real IMP for end-to-end tests: launchers built and installed setuid.

The launchers run the working tree's ``flux_imp`` (copied into a private,
root-owned, world-readable site dir beside links to the venv's
dependencies), so tests always exercise the code under test, through the
real setuid path, as real users.

A setuid test build honours FLUX_IMP_CONFIG_PATTERN: whoever can run one
chooses root's config.  So every setuid build the suite makes lives under
a Gate, a directory that only root and the test users it admits can
traverse, and make_setuid() refuses any other place.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOP = Path(__file__).resolve().parents[1]
MAKEFILE_DIR = TOP / "packaging" / "launcher"
# What an IMP command imports from the venv (curve: nacl._sodium and the cffi
# backend it loads; python-prctl): copied into a test site, not linked.
_COPIED = ("nacl", "_cffi_backend", "prctl", "_prctl")
# Gates go in /var/tmp, which a job's private /tmp does not hide.
_GATE_BASE = Path("/var/tmp")
_GATE_PREFIX = "fluximp-setuid-"

# Linux's POSIX ACL extended attribute (linux/posix_acl_xattr.h): a version,
# then (tag, permissions, id) entries sorted by tag, then id.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_NO_ID = 0xFFFFFFFF
_RWX, _SEARCH, _NONE = 7, 1, 0


class Gate:
    """A root-owned directory that root and the admitted uids alone can
    traverse (mode 0700 plus an ACL granting each admitted uid search
    permission only).

    An ACL names uids, so no caller needs a supplementary group: tests keep
    running the IMP with users.become() (no groups), and every assertion
    about the job's groups holds.  A mode alone cannot do it: 0711 still
    lets anyone exec a path they know, and one group cannot cover users
    who each have their own.
    """

    def __init__(self, path: Path, uids: set[int]) -> None:
        self.path = path
        self._uids = uids
        self._write_acl()

    def _write_acl(self) -> None:
        entries = [(_USER_OBJ, _RWX, _NO_ID),
                   *((_USER, _SEARCH, uid) for uid in sorted(self._uids)),
                   (_GROUP_OBJ, _NONE, _NO_ID), (_MASK, _SEARCH, _NO_ID),
                   (_OTHER, _NONE, _NO_ID)]  # fmt: skip
        acl = struct.pack("<I", _ACL_VERSION) + b"".join(
            struct.pack("<HHI", *entry) for entry in entries)
        os.setxattr(self.path, _ACL_XATTR, acl)  # the mode's group bits become the mask

    @contextlib.contextmanager
    def admitted(self, uid: int) -> Iterator[None]:
        """Let ``uid`` in for a while (e.g. a caller with no passwd entry)."""
        if uid in self._uids:
            yield
            return
        self._uids.add(uid)
        self._write_acl()
        try:
            yield
        finally:
            self._uids.discard(uid)
            self._write_acl()


def _remove_dead_gates() -> None:
    # A crashed session's gate: its ACL names uids that may be reused.
    for path in _GATE_BASE.glob(f"{_GATE_PREFIX}*-*"):
        pid = path.name[len(_GATE_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def gate(*uids: int) -> Iterator[Gate]:
    """A fresh Gate admitting ``uids``, removed with all it holds on exit."""
    _remove_dead_gates()
    path = Path(tempfile.mkdtemp(prefix=f"{_GATE_PREFIX}{os.getpid()}-", dir=_GATE_BASE))
    try:
        os.chown(path, 0, 0)
        os.chmod(path, 0o700)
        yield Gate(path, set(uids))
    finally:
        shutil.rmtree(path)


@contextlib.contextmanager
def gated_dir(gate: Gate, prefix: str = "fluximp-") -> Iterator[Path]:
    """A fresh root-owned 0755 directory in ``gate``, for setuid builds and
    what they need; removed on exit."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=gate.path))
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path)


def _unreachable_by_others(path: Path) -> bool:
    """True if some directory above ``path`` is root's and closed to others."""
    for parent in path.absolute().parents:
        st = os.stat(parent)
        if st.st_uid == 0 and st.st_gid == 0 and not st.st_mode & stat.S_IXOTH:
            return True
    return False


# The launcher runs only an ELF interpreter (a script's "#!" would escape
# its checks), so the wrapper adding -X importtime is a small binary.
_IMPORTTIME_C = r"""
#include <string.h>
#include <unistd.h>
int main(int argc, char *argv[])
{
    char *args[argc + 3];
    args[0] = PYTHON;
    args[1] = "-X";
    args[2] = "importtime";
    memcpy(args + 3, argv + 1, (size_t)argc * sizeof(char *)); /* with the NULL */
    execv(PYTHON, args);
    return 127;
}
"""


def importtime_build(bindir: Path, site: Path) -> Path:
    """A setuid test launcher in ``bindir`` (in a gate) on ``site`` whose
    interpreter is a root-owned wrapper adding ``-X importtime`` (the
    launcher itself takes no interpreter flags); made once per ``bindir``."""
    out = bindir / "flux-imp-importtime"
    if out.exists():
        return out
    source, wrapper = bindir / "python-importtime.c", bindir / "python-importtime"
    source.write_text(_IMPORTTIME_C)
    python = os.path.realpath(sys.executable)
    subprocess.run(["gcc", "-O2", f'-DPYTHON="{python}"', "-o", str(wrapper), str(source)],
                   check=True)  # fmt: skip
    os.chmod(wrapper, 0o755)
    subprocess.run(["make", "-s", "-C", str(MAKEFILE_DIR), f"PYTHON={wrapper}",
                    f"SITEDIR={site}", "TEST_BUILD=1", f"OUT={out}"], check=True)  # fmt: skip
    return make_setuid(out)


def imported_by(err: str) -> list[str]:
    """The modules an importtime_build() IMP logged on stderr, in order."""
    return [line.rsplit("|", 1)[1].strip() for line in err.splitlines()
            if line.startswith("import time:") and line.count("|") == 2
            and line[12:].split("|")[0].strip().isdigit()]  # not the header  # fmt: skip


def make_setuid(path: Path) -> Path:
    """chown root:root, chmod 4755: only where others cannot reach ``path``."""
    if not _unreachable_by_others(path):
        raise RuntimeError(f"refusing a setuid build that every user can run: {path} "
                           "(build it in a gated_dir())")
    os.chown(path, 0, 0)
    os.chmod(path, 0o4755)
    return path


@dataclass(frozen=True)
class ImpInstall:
    prefix: Path  # in gate
    site: Path
    test_build: Path  # setuid; honours FLUX_IMP_CONFIG_PATTERN like upstream's test build
    installed: Path  # setuid; the production build (ignores every override)
    unprivileged: Path  # the test build, not setuid (mode 0755)
    gate: Gate  # who may run them
    proxy: Path | None = None  # lingering/flux-imp, root 0755: what the setuid builds linger as


def _make_site(site: Path, top: Path = TOP) -> None:
    """``site``: the venv's packages linked, ``top``'s flux_imp copied and
    byte-compiled."""
    venv_site = Path(sysconfig.get_paths()["purelib"])
    site.mkdir()
    for entry in venv_site.iterdir():
        if entry.name.startswith(("flux_imp", "flux-imp", "__editable__")):
            continue
        if entry.name.startswith(_COPIED):
            # A package install's files are no symlinks: the import guard
            # would follow one through posixpath, and so import os (2 ms).
            copy = shutil.copytree if entry.is_dir() else shutil.copy2
            copy(entry, site / entry.name)
        else:
            os.symlink(entry, site / entry.name)
    shutil.copytree(top / "flux_imp", site / "flux_imp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # Byte-compile, as a package install does: the launcher runs Python with
    # -B, which only stops it writing bytecode, so without this every start
    # compiles every module it imports (12-25 ms each time).  Same
    # interpreter as the launcher's, so the bytecode is the one it reads.
    if not compileall.compile_dir(site / "flux_imp", quiet=1):
        raise RuntimeError(f"byte-compiling {site / 'flux_imp'} failed")


def build_launcher(site: Path, out: Path, test_build: int, sysconfdir: str = "/etc",
                   module: str = "flux_imp.imp.main", top: Path = TOP) -> Path:
    """A launcher at ``out`` (from ``top``'s sources) and the lingering
    helper it names, beside it in ``lingering/`` under the name the process
    keeps, ``flux-imp`` (root 0755, as a package installs it); the helper's
    path."""
    python = os.path.realpath(sys.executable)
    proxy = out.parent / "lingering" / "flux-imp"
    proxy.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    subprocess.run(
        ["make", "-s", "-C", str(top / MAKEFILE_DIR.relative_to(TOP)), f"PYTHON={python}",
         f"SITEDIR={site}", f"TEST_BUILD={test_build}", f"SYSCONFDIR={sysconfdir}",
         f"MODULE={module}", f"OUT={out}", f"PROXY={proxy}", f"PROXY_OUT={proxy}"],
        check=True,
    )
    os.chown(proxy, 0, 0)
    os.chmod(proxy, 0o755)  # never setuid: the root parent execs it
    return proxy


def build_test_launcher(directory: Path, top: Path) -> Path:
    """The flux_imp and launcher sources of the tree ``top`` built under
    ``directory`` (in a gated_dir()): a site and a setuid test build, whose
    path this returns (bench/ab_imp.py's builds)."""
    directory.mkdir(mode=0o755)
    site = directory / "site"
    _make_site(site, top)
    bindir = directory / "libexec"
    bindir.mkdir()
    out = bindir / "flux-imp-test"
    build_launcher(site, out, 1, top=top)
    return make_setuid(out)


def build_installed(inst: ImpInstall, out: Path, sysconfdir: str) -> Path:
    """A production build reading ``sysconfdir``, installed setuid root at
    ``out`` (in a gated_dir(), e.g. under ``inst.prefix``)."""
    build_launcher(inst.site, out, 0, sysconfdir)
    return make_setuid(out)


def build(prefix: Path, gate: Gate) -> ImpInstall:
    """Build and install every variant under ``prefix``, a gated_dir() of ``gate``."""
    site = prefix / "site"
    _make_site(site)
    bindir = prefix / "libexec"
    bindir.mkdir()
    inst = ImpInstall(prefix, site, bindir / "flux-imp-test", bindir / "flux-imp",
                      bindir / "flux-imp-unpriv", gate, bindir / "lingering" / "flux-imp")
    build_launcher(site, inst.test_build, 1)
    build_launcher(site, inst.installed, 0)
    shutil.copy(inst.test_build, inst.unprivileged)
    make_setuid(inst.test_build)
    make_setuid(inst.installed)
    os.chown(inst.unprivileged, 0, 0)
    os.chmod(inst.unprivileged, 0o755)
    return inst


def write_config(directory: Path, text: str, name: str = "imp.toml") -> str:
    """Write a root-owned 0644 config file; return the glob pattern of ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    path = directory / name
    path.write_text(text)
    os.chmod(path, 0o644)
    return str(directory / "*.toml")


def toml_table(name: str, keys: Mapping[str, Any]) -> str:
    """``[name]`` and its keys (those whose value is None left out), each
    value written as JSON: valid TOML for strings, numbers, booleans and
    arrays of them."""
    lines = [f"[{name}]\n"]
    lines.extend(f"{key} = {json.dumps(value)}\n" for key, value in keys.items()
                 if value is not None)  # fmt: skip
    return "".join(lines)


def run(
    binary: Path,
    args: list[str],
    *,
    as_user: Callable[[], None] | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes = b"",
    timeout: float = 60,
    cwd: Path | str = "/",
) -> subprocess.CompletedProcess[bytes]:
    """Run the IMP (as ``as_user``, a users.become() preexec) in ``cwd`` and
    capture output."""
    return subprocess.run(
        [str(binary), *args], input=stdin, capture_output=True, timeout=timeout,
        env=dict(env) if env is not None else {"PATH": "/usr/bin:/bin"},
        preexec_fn=as_user, cwd=cwd, check=False,
    )
