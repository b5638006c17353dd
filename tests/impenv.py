"""The real IMP for end-to-end tests: launchers built and installed setuid.

The launchers run the working tree's ``flux_imp`` (copied into a private,
root-owned, world-readable site dir beside links to the venv's
dependencies), so tests always exercise the code under test, through the
real setuid path, as real users.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOP = Path(__file__).resolve().parents[1]
MAKEFILE_DIR = TOP / "packaging" / "launcher"


@dataclass(frozen=True)
class ImpInstall:
    prefix: Path
    site: Path
    test_build: Path  # setuid; honours FLUX_IMP_CONFIG_PATTERN like upstream's test build
    installed: Path  # setuid; the production build (ignores every override)
    unprivileged: Path  # the test build, not setuid (mode 0755)


def _make_site(site: Path) -> None:
    venv_site = Path(sysconfig.get_paths()["purelib"])
    site.mkdir()
    for entry in venv_site.iterdir():
        if entry.name.startswith(("flux_imp", "flux-imp", "__editable__")):
            continue
        os.symlink(entry, site / entry.name)
    shutil.copytree(TOP / "flux_imp", site / "flux_imp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # Byte-compile, as a package install does: the launcher runs Python with
    # -B, which only stops it writing bytecode, so without this every start
    # compiles every module it imports (12-25 ms each time).  Same
    # interpreter as the launcher's, so the bytecode is the one it reads.
    if not compileall.compile_dir(site / "flux_imp", quiet=1):
        raise RuntimeError(f"byte-compiling {site / 'flux_imp'} failed")


def _build(site: Path, out: Path, test_build: int, sysconfdir: str = "/etc",
           module: str = "flux_imp.imp.main") -> None:
    python = os.path.realpath(sys.executable)
    subprocess.run(
        ["make", "-s", "-C", str(MAKEFILE_DIR), f"PYTHON={python}", f"SITEDIR={site}",
         f"TEST_BUILD={test_build}", f"SYSCONFDIR={sysconfdir}", f"MODULE={module}",
         f"OUT={out}"],
        check=True,
    )


def build_installed(inst: ImpInstall, out: Path, sysconfdir: str) -> Path:
    """A production build reading ``sysconfdir``, installed setuid root at ``out``."""
    _build(inst.site, out, 0, sysconfdir)
    os.chown(out, 0, 0)
    os.chmod(out, 0o4755)
    return out


def build(prefix: Path) -> ImpInstall:
    """Build and install every variant under ``prefix`` (root-owned, 0755)."""
    os.chmod(prefix, 0o755)
    site = prefix / "site"
    _make_site(site)
    bindir = prefix / "libexec"
    bindir.mkdir()
    inst = ImpInstall(prefix, site, bindir / "flux-imp-test", bindir / "flux-imp",
                      bindir / "flux-imp-unpriv")
    _build(site, inst.test_build, 1)
    _build(site, inst.installed, 0)
    shutil.copy(inst.test_build, inst.unprivileged)
    for path, mode in ((inst.test_build, 0o4755), (inst.installed, 0o4755),
                       (inst.unprivileged, 0o755)):
        os.chown(path, 0, 0)
        os.chmod(path, mode)
    return inst


def make_prefix() -> Path:
    return Path(tempfile.mkdtemp(prefix="fluximp-install-"))


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
