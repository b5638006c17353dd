"""Shared fixtures."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import impenv, users
from . import munged as munged_helper


@pytest.fixture(scope="session")
def munged() -> Iterator[str]:
    """The socket path of a private munged, started once per session."""
    if not munged_helper.available():
        pytest.skip("munged is not installed")
    with munged_helper.running_munged() as socket:
        yield socket


@contextlib.contextmanager
def _world_dir() -> Iterator[Path]:
    # pytest's tmp_path lies under a 0700 directory other users cannot cross.
    path = Path(tempfile.mkdtemp(prefix="fluximp-test-"))
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A fresh temp dir that every user can reach (and read)."""
    with _world_dir() as path:
        yield path


@pytest.fixture(scope="session")
def guest() -> Iterator[pwd.struct_passwd]:
    """A real user, ``fluximp-guest``, whose home is a fresh temp dir."""
    if os.getuid() != 0:
        pytest.skip("creating users needs root")
    with _world_dir() as base, users.temp_user("fluximp-guest", base / "home") as user:
        yield user


@pytest.fixture(scope="session")
def owner() -> Iterator[pwd.struct_passwd]:
    """A real user, ``fluximp-owner``: the Flux instance owner who runs the IMP."""
    if os.getuid() != 0:
        pytest.skip("creating users needs root")
    with _world_dir() as base, users.temp_user("fluximp-owner", base / "home") as user:
        yield user


@pytest.fixture(scope="session")
def imp() -> Iterator[impenv.ImpInstall]:
    """The launchers, built from packaging/launcher and installed setuid root."""
    if os.getuid() != 0:
        pytest.skip("installing a setuid launcher needs root")
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build the launcher")
    prefix = impenv.make_prefix()
    try:
        yield impenv.build(prefix)
    finally:
        shutil.rmtree(prefix)
