"""flux-imp start-up, version and whoami through the real setuid launcher
(upstream t1000-imp-basic.t), plus our config warnings."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from flux_imp import __version__
from flux_imp.imp.unprivileged import version

from . import impenv, users
from .impenv import ImpInstall


def env_for(pattern: str, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern, **extra}


@pytest.fixture
def pattern(world_tmp: Path) -> str:
    return impenv.write_config(world_tmp / "conf.d", "allow-sudo = true\n")


def ids(user: pwd.struct_passwd) -> str:
    return f"uid={user.pw_uid} euid={user.pw_uid} gid={user.pw_gid} egid={user.pw_gid}"


def test_no_args_fails(imp: ImpInstall, owner: pwd.struct_passwd, pattern: str) -> None:
    result = impenv.run(imp.test_build, [], as_user=users.become(owner), env=env_for(pattern))
    assert result.returncode == 1
    assert result.stderr == b"flux-imp: Fatal: command required\n"


def test_unknown_command(imp: ImpInstall, owner: pwd.struct_passwd, pattern: str) -> None:
    result = impenv.run(imp.test_build, ["--help"], as_user=users.become(owner),
                        env=env_for(pattern))
    assert result.returncode == 1
    assert result.stderr == b"flux-imp: Fatal: Unknown IMP command: --help\n"


def test_version(imp: ImpInstall, owner: pwd.struct_passwd, pattern: str) -> None:
    result = impenv.run(imp.test_build, ["version"], as_user=users.become(owner),
                        env=env_for(pattern))
    pam = "+pam\n" if version.pam_available() else ""
    assert (result.returncode, result.stdout) == (0, f"flux-imp v{__version__}\n{pam}".encode())


def test_no_config_file(imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path) -> None:
    missing = str(world_tmp / "none.toml")
    result = impenv.run(imp.test_build, ["version"], as_user=users.become(owner),
                        env=env_for(missing))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        f"flux-imp: Warning: {missing}: No config file(s) found",
        "flux-imp: Fatal: Failed to load configuration",
    ]


def test_bad_config_syntax(imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path) -> None:
    pattern = impenv.write_config(world_tmp / "c", "bad =\n", "bad.toml")
    result = impenv.run(imp.test_build, ["version"], as_user=users.become(owner),
                        env=env_for(pattern))
    assert result.returncode == 1
    assert f"loading config: {world_tmp}/c/bad.toml: 1: syntax error".encode() in result.stderr


def test_relative_config_pattern_is_read_from_the_callers_cwd(
    imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path
) -> None:
    """As upstream's test build; named as given, as upstream's messages do."""
    impenv.write_config(world_tmp / "c", "bad =\n", "bad.toml")
    result = impenv.run(imp.test_build, ["version"], as_user=users.become(owner),
                        env=env_for("bad.toml"), cwd=world_tmp / "c")
    assert result.returncode == 1
    assert b"flux-imp: Warning: loading config: bad.toml: 1: syntax error" in result.stderr
    installed = impenv.run(imp.installed, ["version"], as_user=users.become(owner),
                           env=env_for("bad.toml"), cwd=world_tmp / "c")
    assert b"bad.toml" not in installed.stderr
    assert b"/etc/flux/imp/conf.d/*.toml" in installed.stderr


def test_installed_build_ignores_config_pattern(
    imp: ImpInstall, owner: pwd.struct_passwd, pattern: str
) -> None:
    result = impenv.run(imp.installed, ["version"], as_user=users.become(owner),
                        env=env_for(pattern))
    assert result.returncode == 1
    assert b"/etc/flux/imp/conf.d/*.toml" in result.stderr


def test_installed_build_reads_its_compiled_in_sysconfdir(
    imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path
) -> None:
    """``make SYSCONFDIR=...``: the Python side reads that tree, nothing else."""
    binary = impenv.build_installed(imp, imp.prefix / "flux-imp-etc", f"{world_tmp}/etc")
    missing = impenv.run(binary, ["version"], as_user=users.become(owner),
                         env=env_for(str(world_tmp / "nowhere.toml")))
    assert missing.returncode == 1
    assert f"{world_tmp}/etc/flux/imp/conf.d/*.toml".encode() in missing.stderr
    assert missing.stderr.endswith(b"flux-imp: Fatal: Failed to load configuration\n")
    for sub in ("etc", "etc/flux", "etc/flux/imp"):
        (world_tmp / sub).mkdir()
    impenv.write_config(world_tmp / "etc/flux/imp/conf.d", "log-level = \"bogus\"\n")
    result = impenv.run(binary, ["version"], as_user=users.become(owner),
                        env=env_for(str(world_tmp / "nowhere.toml")))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"flux-imp: Warning: unknown log-level 'bogus', ignoring\n"


def test_whoami_setuid(imp: ImpInstall, owner: pwd.struct_passwd, pattern: str) -> None:
    result = impenv.run(imp.test_build, ["whoami"], as_user=users.become(owner),
                        env=env_for(pattern, SUDO_USER="nobody"))  # ignored: real uid != 0
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.decode().splitlines()) == [
        f"flux-imp: privileged: uid={owner.pw_uid} euid=0 gid={owner.pw_gid} "
        f"egid={owner.pw_gid}",
        f"flux-imp: unprivileged: {ids(owner)}",
    ]


def test_whoami_unprivileged(imp: ImpInstall, owner: pwd.struct_passwd, pattern: str) -> None:
    result = impenv.run(imp.unprivileged, ["whoami"], as_user=users.become(owner),
                        env=env_for(pattern))
    assert result.stdout.decode() == f"flux-imp: unprivileged: {ids(owner)}\n"


def test_whoami_under_sudo(imp: ImpInstall, owner: pwd.struct_passwd, pattern: str) -> None:
    result = impenv.run(imp.test_build, ["whoami"],
                        env=env_for(pattern, SUDO_USER=owner.pw_name))
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.decode().splitlines()) == [
        f"flux-imp: privileged: uid={owner.pw_uid} euid=0 gid={owner.pw_gid} egid=0",
        f"flux-imp: unprivileged: {ids(owner)}",
    ]


def test_sudo_not_enabled(imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path) -> None:
    pattern = impenv.write_config(world_tmp / "c", "allow-sudo = false\n")
    result = impenv.run(imp.test_build, ["version"],
                        env=env_for(pattern, SUDO_USER=owner.pw_name))
    assert result.returncode == 1
    assert result.stderr == b"flux-imp: Fatal: sudo support not enabled\n"


def test_sudo_unknown_user(imp: ImpInstall, pattern: str) -> None:
    result = impenv.run(imp.test_build, ["version"], env=env_for(pattern, SUDO_USER="invalid"))
    assert result.returncode == 1
    assert result.stderr == b"flux-imp: Fatal: Failed to enable sudo support\n"


def test_refuses_to_run_as_root(imp: ImpInstall, pattern: str) -> None:
    result = impenv.run(imp.test_build, ["version"], env=env_for(pattern))
    assert result.returncode == 1
    assert result.stderr == b"flux-imp: Fatal: Refusing to run as root\n"


def test_log_level_debug_accepted_and_unknown_warned(
    imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path
) -> None:
    good = impenv.write_config(world_tmp / "a", 'log-level = "debug"\n')
    result = impenv.run(imp.test_build, ["version"], as_user=users.become(owner),
                        env=env_for(good))
    assert (result.returncode, result.stderr) == (0, b"")
    bad = impenv.write_config(world_tmp / "b", 'log-level = "verbose"\n')
    result = impenv.run(imp.test_build, ["version"], as_user=users.become(owner),
                        env=env_for(bad))
    assert result.returncode == 0
    assert b"flux-imp: Warning: unknown log-level 'verbose', ignoring\n" in result.stderr


def test_unknown_and_mistyped_keys_are_warned(
    imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path
) -> None:
    pattern = impenv.write_config(
        world_tmp / "c", 'allow-sudo = "true"\n[exec]\nalowed-users = ["x"]\n')
    result = impenv.run(imp.test_build, ["version"], as_user=users.become(owner),
                        env=env_for(pattern))
    assert result.returncode == 0
    lines = result.stderr.decode().splitlines()
    assert "flux-imp: Warning: config: unknown key 'exec.alowed-users' ignored" in lines
    assert ("flux-imp: Warning: config: 'allow-sudo' should be of type bool, "
            "read as false/empty") in lines


def test_path_paranoia_in_test_build(
    imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path
) -> None:
    pattern = impenv.write_config(world_tmp / "c", "allow-sudo = true\n")
    os.chmod(world_tmp / "c" / "imp.toml", 0o666)
    env = env_for(pattern)
    assert impenv.run(imp.test_build, ["version"], as_user=users.become(owner),
                      env=env).returncode == 0  # a test build skips path checks ...
    env["FLUX_TEST_IMP_PATH_PARANOIA"] = "1"  # ... unless asked
    result = impenv.run(imp.test_build, ["version"], as_user=users.become(owner), env=env)
    assert result.returncode == 1
    assert (f"flux-imp: Warning: loading config: {world_tmp}/c/imp.toml: -1: "
            "unable to open: bad file permissions (0666)").encode() in result.stderr


def test_pam_available_is_whether_libpam_loads() -> None:
    """version's +pam is looked up, not loaded: it must agree with a dlopen."""
    import ctypes

    try:
        ctypes.CDLL("libpam.so.0")
        loads = True
    except OSError:
        loads = False
    assert version.pam_available() is loads
