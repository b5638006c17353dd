"""Shared fixtures."""

from __future__ import annotations

import importlib
import os
import pkgutil
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import flux_imp.sign
from flux_imp.imp import audit

from . import impenv, jobs, users
from . import munged as munged_helper
from .syslogtrap import SyslogTrap, syslog_trap

# The whole signing library, loaded before any test forks a child that
# becomes a test user to sign or verify: it imports its parts on first use,
# and that child may not be able to read a checkout in a 0700 directory
# (CI's, mktemp's).
for _module in pkgutil.iter_modules(flux_imp.sign.__path__, "flux_imp.sign."):
    if not _module.name.endswith(".__main__"):
        importlib.import_module(_module.name)


@pytest.fixture(scope="session", autouse=True)
def host_audit_log_restored() -> Iterator[None]:
    """Records no syslog took go to the host's fallback audit log (the IMPs
    of tests without a syslog trap; there is no syslog here): the session
    leaves that log as it found it."""
    log_dir = Path(audit.FALLBACK_DIR)
    log = log_dir / audit.FALLBACK
    had_dir = log_dir.exists()
    size = log.stat().st_size if log.exists() else None
    yield
    if not had_dir:
        shutil.rmtree(log_dir, ignore_errors=True)
    elif size is None:
        log.unlink(missing_ok=True)
    elif log.exists():
        os.truncate(log, size)


@pytest.fixture(scope="session")
def munged() -> Iterator[str]:
    """The socket path of a private munged, started once per session."""
    if not munged_helper.available():
        pytest.skip("munged is not installed")
    with munged_helper.running_munged() as socket:
        yield socket


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A fresh temp dir that every user can reach (and read)."""
    with users.world_dir() as path:
        yield path


def _session_user(prefix: str) -> Iterator[pwd.struct_passwd]:
    """A real user, ``<prefix>-<pid>``, whose home is a fresh temp dir."""
    if os.getuid() != 0:
        pytest.skip("creating users needs root")
    with users.world_dir() as base, users.temp_user(prefix, base / "home") as user:
        yield user


@pytest.fixture(scope="session")
def guest() -> Iterator[pwd.struct_passwd]:
    """A real user, ``fluximp-guest``: the job's user, who signs J."""
    yield from _session_user("fluximp-guest")


@pytest.fixture(scope="session")
def owner() -> Iterator[pwd.struct_passwd]:
    """A real user, ``fluximp-owner``: the Flux instance owner who runs the IMP."""
    yield from _session_user("fluximp-owner")


@pytest.fixture(scope="session")
def setuid_gate(guest: pwd.struct_passwd, owner: pwd.struct_passwd) -> Iterator[impenv.Gate]:
    """Where every setuid build of the session goes: only root, the guest
    and the owner can reach it (Gate.admitted() lets another uid in)."""
    if os.getuid() != 0:
        pytest.skip("installing a setuid launcher needs root")
    with impenv.gate(guest.pw_uid, owner.pw_uid) as gate:
        yield gate


@pytest.fixture(scope="session")
def imp(setuid_gate: impenv.Gate) -> Iterator[impenv.ImpInstall]:
    """The launchers, built from packaging/launcher and installed setuid root
    in the gate."""
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build the launcher")
    with impenv.gated_dir(setuid_gate, "fluximp-install-") as prefix:
        yield impenv.build(prefix, setuid_gate)


@pytest.fixture
def job_cgroup() -> Iterator[Path]:
    """A fresh ``imp-shell-test-*`` cgroup (an IMP started in it is in
    cgroup-kill mode); emptied and removed after."""
    with jobs.child_cgroup("imp-shell-test-") as path:
        yield path


@pytest.fixture
def syslog(world_tmp: Path) -> Iterator[SyslogTrap]:
    """Audit capture: run the IMP with ``preexec_fn=syslog.preexec(...)``,
    then read syslog.records()."""
    with syslog_trap(world_tmp) as trap:
        yield trap


@pytest.fixture
def exec_setup(imp: impenv.ImpInstall, munged: str, owner: pwd.struct_passwd,
               guest: pwd.struct_passwd, world_tmp: Path) -> jobs.ExecSetup:  # fmt: skip
    """The owner may exec (tests.jobs.write_exec_config) through the test build."""
    return jobs.ExecSetup(imp.test_build,
                          jobs.write_exec_config(world_tmp / "conf.d", munged, owner),
                          owner, guest)
