"""flux-security's group: lazy subcommands, exit codes, the one-line error."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

import flux_imp
from flux_imp.admin import cli
from flux_imp.admin.errors import AdminError

FLUX_SECURITY = [sys.executable, "-m", "flux_imp.admin"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLUX_SECURITY, *args], capture_output=True, text=True, check=False)


def test_version() -> None:
    got = run("--version")
    assert (got.returncode, got.stdout) == (0, f"flux-security {flux_imp.__version__}\n")


def test_bare_and_unknown_are_usage_errors() -> None:
    assert run().returncode == 2
    got = run("no-such-command")
    assert got.returncode == 2
    assert "No such command" in got.stderr


def test_help_lists_every_subcommand() -> None:
    got = run("--help")
    assert got.returncode == 0, got.stderr
    for name in cli.SUBCOMMANDS:
        assert f"  {name} " in got.stdout


def test_the_table_is_the_agreed_one() -> None:
    assert cli.SUBCOMMANDS == {
        "config": "flux_imp.admin.config:config", "ca": "flux_imp.admin.ca:ca",
        "dry-run": "flux_imp.admin.dryrun:dry_run", "check": "flux_imp.admin.check:check",
    }  # fmt: skip


def _group(lazy: dict[str, str]) -> click.Group:
    @click.group(cls=cli.LazyGroup, lazy=lazy)
    def group() -> None:
        pass

    return group


def test_a_missing_module_fails_only_when_invoked(capsys: pytest.CaptureFixture[str]) -> None:
    group = _group({"gone": "flux_imp.admin.no_such_module:cmd", "here": "click:echo"})
    with pytest.raises(SystemExit) as info:
        group.main(["gone"], prog_name="flux-security")
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("flux-security: gone: not available (No module named ")
    assert err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        group.main(["--help"], prog_name="flux-security")
    assert info.value.code == 0
    assert "gone  (not available)" in capsys.readouterr().out


def test_admin_error_is_one_line_with_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    group = _group({})

    @group.command()
    def boom() -> None:
        raise AdminError("first\nsecond", code=3)

    with pytest.raises(SystemExit) as info:
        group.main(["boom"], prog_name="flux-security")
    assert info.value.code == 3
    assert capsys.readouterr().err == "flux-security: first second\n"


def test_admin_is_not_privileged() -> None:
    assert not [m for m in flux_imp.PRIVILEGED_MODULES if m.startswith("flux_imp.admin")]
