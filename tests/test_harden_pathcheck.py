"""Privileged path checks trust only root (issue 9): a ``run.NAME.path``,
a config file or a CA file that the owner's group may change, or that sits
in a directory it may change, is refused by the root half.  The installed
build also checks every directory up to "/"; a test build (with
FLUX_TEST_IMP_PATH_PARANOIA) only the immediate parent, as upstream.

End to end through the setuid launchers, as the instance owner: the
installed build built to read a private sysconfdir, and the test build.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert

from . import impenv, users
from .impenv import ImpInstall
from .signconf import ca_table

PROLOG = "#!/bin/sh\necho ran\n"


@dataclass(frozen=True)
class Imps:
    installed: Path  # a production build whose sysconfdir is etc
    test_build: Path
    etc: Path  # the installed build's sysconfdir


@pytest.fixture(scope="module")
def imps(imp: ImpInstall) -> Iterator[Imps]:
    with users.world_dir() as top:
        etc = top / "etc"
        for sub in ("etc", "etc/flux", "etc/flux/imp"):
            (top / sub).mkdir(mode=0o755)
        # Beside the session's builds: where a setuid build may be.
        binary = impenv.build_installed(imp, imp.prefix / f"flux-imp-{top.name}", str(etc))
        try:
            yield Imps(binary, imp.test_build, etc)
        finally:
            binary.unlink()


def run(imps: Imps, build: str, owner: pwd.struct_passwd, config: str, args: list[str],
        stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """The IMP of ``build`` as the owner, with ``config`` as its only config file."""
    pattern = impenv.write_config(imps.etc / "flux" / "imp" / "conf.d", config)
    env = {"PATH": "/usr/bin:/bin"}
    if build == "test":
        env |= {"FLUX_IMP_CONFIG_PATTERN": pattern, "FLUX_TEST_IMP_PATH_PARANOIA": "1"}
    binary = imps.installed if build == "installed" else imps.test_build
    return impenv.run(binary, args, as_user=users.become(owner), env=env, stdin=stdin)


def prolog(directory: Path, mode: int = 0o755) -> Path:
    """A root-owned prolog script in ``directory`` (made 0755 if new)."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = directory / "prolog"
    path.write_text(PROLOG)
    path.chmod(mode)
    return path


def run_prolog(imps: Imps, build: str, owner: pwd.struct_passwd,
               path: Path) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    table = impenv.toml_table("run.prolog", {"allowed-users": [owner.pw_name],
                                             "path": str(path)})  # fmt: skip
    return run(imps, build, owner, table, ["run", "prolog"])


def refused(result: subprocess.CompletedProcess[bytes], message: str) -> None:
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == f"flux-imp: Fatal: {message}\n"


def ran(result: subprocess.CompletedProcess[bytes]) -> None:
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ran\n", b"")


BUILDS = ["installed", "test"]


@pytest.mark.parametrize("build", BUILDS)
def test_prolog_writable_by_the_owners_group_is_refused(
    imps: Imps, owner: pwd.struct_passwd, world_tmp: Path, build: str
) -> None:
    # Upstream accepts it: the group is the setuid IMP's effective group.
    path = prolog(world_tmp / "bin", 0o775)
    os.chown(path, 0, owner.pw_gid)
    refused(run_prolog(imps, build, owner, path), f"run: {path}: bad file permissions (0775)")


@pytest.mark.parametrize("build", BUILDS)
def test_prolog_in_a_directory_writable_by_the_owners_group_is_refused(
    imps: Imps, owner: pwd.struct_passwd, world_tmp: Path, build: str
) -> None:
    path = prolog(world_tmp / "bin")
    os.chown(path.parent, 0, owner.pw_gid)
    path.parent.chmod(0o775)
    refused(run_prolog(imps, build, owner, path),
            f"run: {path}: parent directory is group-writable without sticky bit")


def test_prolog_under_a_world_writable_ancestor(
    imps: Imps, owner: pwd.struct_passwd, world_tmp: Path
) -> None:
    """Two levels up: the installed build refuses, a test build keeps
    upstream's parent-only check."""
    top = world_tmp / "open"
    path = prolog(top / "sub" / "bin")
    top.chmod(0o757)
    refused(run_prolog(imps, "installed", owner, path),
            f"run: {path}: ancestor directory {top} is world-writable without sticky bit")
    ran(run_prolog(imps, "test", owner, path))


@pytest.mark.parametrize("build", BUILDS)
def test_prolog_under_a_sticky_world_writable_ancestor_runs(
    imps: Imps, owner: pwd.struct_passwd, world_tmp: Path, build: str
) -> None:
    top = world_tmp / "tmp"
    path = prolog(top / "sub" / "bin")
    top.chmod(0o1777)  # like /tmp, which is above every test directory anyway
    ran(run_prolog(imps, build, owner, path))


def test_installed_build_follows_symlinks_to_the_ancestors(
    imps: Imps, owner: pwd.struct_passwd, world_tmp: Path
) -> None:
    # The secure-looking name leads through a world-writable directory.
    top = world_tmp / "open"
    path = prolog(top / "bin")
    top.chmod(0o757)
    (world_tmp / "link").symlink_to(top)
    linked = world_tmp / "link" / "bin" / "prolog"
    refused(run_prolog(imps, "installed", owner, linked),
            f"run: {linked}: ancestor directory {top} is world-writable without sticky bit")
    assert path.exists()


@pytest.mark.parametrize("build", BUILDS)
def test_config_file_in_a_directory_writable_by_the_owners_group_is_refused(
    imps: Imps, owner: pwd.struct_passwd, build: str
) -> None:
    confdir = imps.etc / "flux" / "imp" / "conf.d"
    impenv.write_config(confdir, "")
    os.chown(confdir, 0, owner.pw_gid)
    confdir.chmod(0o775)
    try:
        result = impenv.run(
            imps.installed if build == "installed" else imps.test_build, ["version"],
            as_user=users.become(owner),
            env={"FLUX_IMP_CONFIG_PATTERN": str(confdir / "*.toml"),
                 "FLUX_TEST_IMP_PATH_PARANOIA": "1"},
        )  # fmt: skip
    finally:
        os.chown(confdir, 0, 0)
        confdir.chmod(0o755)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"flux-imp: Warning: loading config: {confdir}/imp.toml: -1: unable to open: "
        "parent directory is group-writable without sticky bit\n"
        "flux-imp: Fatal: Failed to load configuration\n")


@pytest.mark.parametrize(("suffix", "mode"), [(".pub", 0o664), ("", 0o660)],
                         ids=["cert", "secret-key"])  # fmt: skip
def test_ca_file_writable_by_the_owners_group_is_refused(
    imps: Imps, owner: pwd.struct_passwd, world_tmp: Path, suffix: str, mode: int
) -> None:
    table = ca_table(world_tmp)
    authority = CA(table)
    authority.keygen()
    authority.store()
    changed = Path(table["cert-path"] + suffix)
    os.chown(changed, 0, owner.pw_gid)
    changed.chmod(mode)
    result = run(imps, "test", owner, impenv.toml_table("ca", table), ["casign"],
                 stdin=Cert.create().dumps().encode())
    refused(result, f"casign: ca_load: {changed}: bad file permissions ({mode:04o})")
