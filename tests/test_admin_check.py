"""``flux-security check`` on a real installation: the .deb installed,
/etc/flux configured, munged running.  Each test plants one fault, sees it
reported, and puts things back; a clean installation reports no FAIL.

The module builds this tree's .deb and installs it (over an installed
one, which it then leaves installed, as tests/test_package.py does; else
it purges it on exit); without dpkg-buildpackage it checks the installed
package as it is.  /etc/flux is put back as it was either way.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from flux_imp.admin.check import check, run_checks
from flux_imp.admin.cli import main
from flux_imp.sign.ca import CA

from . import sitepkg, users
from .signconf import ca_table
from .sitepkg import IMP_CONF, SITE

SIGN_CONF = """\
[sign]
max-ttl = 1209600
default-type = "munge"
allowed-types = {allowed}
{extra}
"""


@dataclass(frozen=True)
class Installed:
    owner: pwd.struct_passwd
    prolog: Path


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    if os.geteuid() != 0:
        pytest.skip("checking an installation needs root")
    before = sitepkg.installed_version()
    if os.path.exists("/usr/bin/dpkg-buildpackage"):
        # An older installed package would not have what this tree checks.
        sitepkg.install_deb(sitepkg.build_deb())
    elif before is None:
        pytest.skip("not a Debian system with dpkg-dev (packaging/dev/setup.sh installs it)")
    try:
        with sitepkg.saved_etc_flux(), sitepkg.system_munged(), \
                users.world_dir("fluximp-check-") as tmp, \
                users.temp_user("fluximp-chk-owner", tmp / "owner") as owner:
            prolog = tmp / "prolog"
            prolog.write_text("#!/bin/sh\n/usr/bin/id -u\n")
            prolog.chmod(0o755)
            sitepkg.write_imp_config("test.toml", IMP_CONF.format(owner=owner.pw_name,
                                                                  prolog=prolog))
            yield Installed(owner, prolog)
    finally:
        if before is None:
            sitepkg.purge_package()


def _lines() -> list[str]:
    return [f.line() for f in run_checks()]


def _failures() -> list[str]:
    return [line for line in _lines() if line.startswith("FAIL ")]


@pytest.fixture
def planted() -> Iterator[list[Path]]:
    """Config files a test adds: removed afterwards."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        path.unlink(missing_ok=True)


def _imp_file(planted: list[Path], text: str) -> None:
    planted.append(sitepkg.write_imp_config("zz-check.toml", text))


def _sign_file(planted: list[Path], allowed: str, extra: str = "") -> None:
    path = sitepkg.ETC_FLUX / "security" / "conf.d" / "zz-check.toml"
    path.write_text(SIGN_CONF.format(allowed=allowed, extra=extra))
    path.chmod(0o644)
    planted.append(path)


# ------------------------------------------------------------ clean


def test_a_clean_installation_reports_no_fail(installed: Installed) -> None:
    lines = _lines()
    assert not [line for line in lines if line.startswith("FAIL ")], "\n".join(lines)
    assert "OK launcher-users: any user may run it (exec.allowed-users and " \
           "run.*.allowed-users decide)" in lines
    assert any(line.startswith("OK interpreter: /usr/bin/python3") for line in lines)
    assert "OK shells: /usr/bin/id: executable, root-only" in lines
    assert (f"OK helper: {sitepkg.HELPER} (uid 0, gid 0, mode 0755): "
            "root-only, ELF, not setuid") in lines
    assert "OK imp-keys: every key is known and of its type" in lines
    assert any(line.startswith("OK munge: signed and verified through munged") for line in lines)


def test_the_command_exits_0_and_prints_one_finding_a_line(installed: Installed) -> None:
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert all(line.split(" ", 1)[0] in ("OK", "WARN", "FAIL")
               for line in result.output.splitlines())


def test_json_is_a_list_of_status_check_detail(installed: Installed) -> None:
    result = CliRunner().invoke(check, ["--json"])
    findings = json.loads(result.output)
    assert result.exit_code == 0
    assert findings and all(set(f) == {"status", "check", "detail"} for f in findings)
    assert {"status": "OK", "check": "shells",
            "detail": "/usr/bin/id: executable, root-only"} in findings


# ------------------------------------------------------------ planted faults


def test_launcher_without_setuid_fails(installed: Installed) -> None:
    os.chmod(sitepkg.IMP, 0o755)
    try:
        result = CliRunner().invoke(main, ["check"])
    finally:
        os.chmod(sitepkg.IMP, 0o4755)
    assert result.exit_code == 1
    assert (f"FAIL launcher: {sitepkg.IMP} (uid 0, gid 0, mode 0755): not setuid: "
            "the IMP cannot act for other users") in result.output.splitlines()


@pytest.fixture
def helper_aside(installed: Installed) -> Iterator[Path]:
    """The installed helper moved aside (the path the launcher names is
    free), and put back afterwards."""
    aside = Path(f"{sitepkg.HELPER}.check-aside")
    os.rename(sitepkg.HELPER, aside)
    try:
        yield aside
    finally:
        Path(sitepkg.HELPER).unlink(missing_ok=True)
        os.rename(aside, sitepkg.HELPER)


def test_missing_helper_fails_and_python_lingers(installed: Installed,
                                                 helper_aside: Path) -> None:
    assert _failures() == [f"FAIL helper: {sitepkg.HELPER}: No such file or directory: the "
                           "launcher was built with it; a root Python interpreter lingers "
                           "for each running job instead"]
    assert sitepkg.imp(installed.owner, ["version"]).returncode == 0  # the launcher starts


def test_helper_that_is_a_script_fails_as_the_launcher_does(installed: Installed,
                                                            helper_aside: Path) -> None:
    Path(sitepkg.HELPER).write_text("#!/bin/sh\nexit 0\n")
    os.chmod(sitepkg.HELPER, 0o755)
    assert _failures() == [f"FAIL helper: {sitepkg.HELPER}: not an ELF executable: "
                           "the launcher refuses to start"]
    result = sitepkg.imp(installed.owner, ["version"])
    assert (result.returncode, result.stderr.decode()) == (
        1, f"flux-imp: Fatal: {sitepkg.HELPER}: not an ELF executable\n")


def test_group_writable_helper_fails_as_the_launcher_does(installed: Installed) -> None:
    os.chmod(sitepkg.HELPER, 0o775)
    try:
        failures = _failures()
        result = sitepkg.imp(installed.owner, ["version"])
    finally:
        os.chmod(sitepkg.HELPER, 0o755)
    why = f"{sitepkg.HELPER}: not owned by root, or writable by group or others"
    assert failures == [f"FAIL helper: {why}: the launcher refuses to start"]
    assert (result.returncode, result.stderr.decode()) == (1, f"flux-imp: Fatal: {why}\n")


def test_helper_not_owned_by_root_fails(installed: Installed) -> None:
    os.chown(sitepkg.HELPER, installed.owner.pw_uid, 0)
    try:
        failures = _failures()
    finally:
        os.chown(sitepkg.HELPER, 0, 0)
    assert failures == [f"FAIL helper: {sitepkg.HELPER}: not owned by root, or writable by "
                        "group or others: the launcher refuses to start"]


@pytest.mark.parametrize("mode", [0o4755, 0o2755])
def test_setuid_helper_fails_as_the_launcher_does(installed: Installed, mode: int) -> None:
    """Root's helper set-ID could be run by anyone, as root: check fails it,
    the launcher refuses to start, and the helper refuses to run."""
    os.chmod(sitepkg.HELPER, mode)
    try:
        failures = _failures()
        result = sitepkg.imp(installed.owner, ["version"])
        direct = subprocess.run([sitepkg.HELPER], capture_output=True,
                                preexec_fn=users.become(installed.owner))
    finally:
        os.chmod(sitepkg.HELPER, 0o755)
    assert failures == [f"FAIL helper: {sitepkg.HELPER} (uid 0, gid 0, mode {mode:04o}): "
                        "setuid or setgid: anyone could run it with root's privileges on pids "
                        "and cgroups of their choosing; the launcher refuses to start"]
    assert (result.returncode, result.stderr.decode()) == (
        1, f"flux-imp: Fatal: {sitepkg.HELPER}: setuid or setgid\n")
    assert (direct.returncode, direct.stderr) == (
        1, b"flux-imp: Fatal: proxy: setuid or setgid, or no /proc/self/exe\n")


def test_a_launcher_built_without_a_helper_warns(installed: Installed) -> None:
    """PROXY= builds a launcher that names none: Python lingers, by design."""
    with tempfile.TemporaryDirectory(prefix="fluximp-check-noproxy-") as tmp:  # root's, 0700
        out = Path(tmp) / "flux-imp"
        subprocess.run(["make", "-s", "-C", str(sitepkg.TOP / "packaging" / "launcher"),
                        "PYTHON=/usr/bin/python3", f"SITEDIR={SITE}", "PROXY=",
                        f"OUT={out}"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        assert b",proxy=" not in out.read_bytes()
        os.chmod(out, 0o4755)
        lines = [f.line() for f in run_checks(imp=str(out)) if f.check == "helper"]
    assert lines == [f"WARN helper: {out} names no lingering helper (built with PROXY=): "
                     "a root Python interpreter lingers for each running job"]


def test_group_writable_module_in_the_installed_site_fails(installed: Installed) -> None:
    module = SITE / "flux_imp" / "imp" / "main.py"
    mode = module.stat().st_mode & 0o7777
    module.chmod(mode | 0o020)
    try:
        failures = _failures()
    finally:
        module.chmod(mode)
    assert failures == [f"FAIL interpreter: {module}: not owned by root, "
                        "or writable by group or others"]


def test_config_file_writable_by_others_fails(installed: Installed) -> None:
    conf = sitepkg.IMP_CONF_D / "test.toml"
    conf.chmod(0o646)
    try:
        failures = _failures()
    finally:
        conf.chmod(0o644)
    assert f"FAIL imp-config: {conf}: bad file permissions (0646)" in failures


def test_unknown_key_fails(installed: Installed, planted: list[Path]) -> None:
    _imp_file(planted, "[exec]\nallowed-users = []\nallowed-shels = [ \"/bin/sh\" ]\n")
    failures = _failures()
    assert "FAIL imp-keys: config: unknown key 'exec.allowed-shels' ignored" in failures


def test_mistyped_value_fails(installed: Installed, planted: list[Path]) -> None:
    _imp_file(planted, "audit-required = \"yes\"\n")
    assert ("FAIL imp-keys: config: 'audit-required' should be of type bool, "
            "read as false/empty") in _failures()


def test_missing_allowed_shell_fails(installed: Installed, planted: list[Path]) -> None:
    # [exec] replaces the clean file's whole table (a shallow merge).
    _imp_file(planted, "[exec]\nallowed-users = []\n"
              "allowed-shells = [ \"/usr/libexec/flux/no-such-shell\" ]\n")
    assert _failures() == ["FAIL shells: /usr/libexec/flux/no-such-shell: "
                           "No such file or directory"]


def test_run_path_not_root_only_fails(installed: Installed) -> None:
    os.chown(installed.prolog, installed.owner.pw_uid, installed.owner.pw_gid)
    try:
        failures = _failures()
    finally:
        os.chown(installed.prolog, 0, 0)
    assert failures == [f"FAIL run.prolog: run: {installed.prolog}: insecure file ownership"]


def test_run_path_not_executable_fails(installed: Installed) -> None:
    installed.prolog.chmod(0o644)
    try:
        failures = _failures()
    finally:
        installed.prolog.chmod(0o755)
    assert failures == [f"FAIL run.prolog: {installed.prolog}: not executable"]


def test_mechanism_none_allowed_warns(installed: Installed, planted: list[Path]) -> None:
    _sign_file(planted, '[ "munge", "none" ]')
    lines = _lines()
    assert "WARN mechanisms: 'none' is allowed: anyone may sign a job as anyone" in lines
    assert not [line for line in lines if line.startswith("FAIL ")]


def test_munge_allowed_without_munged_fails(installed: Installed, planted: list[Path]) -> None:
    _sign_file(planted, '[ "munge" ]', '[sign.munge]\nsocket-path = "/run/no-munged/socket"\n')
    failures = _failures()
    assert len(failures) == 1 and failures[0].startswith(
        "FAIL munge: round trip failed: sign-munge-sign: "), failures


def test_pam_support_without_service_file_fails(installed: Installed,
                                                planted: list[Path]) -> None:
    if os.path.exists("/etc/pam.d/flux"):
        pytest.skip("this machine has /etc/pam.d/flux")
    _imp_file(planted, "[exec]\nallowed-users = []\npam-support = true\n")
    assert _failures() == ["FAIL pam: pam-support = true, but /etc/pam.d/flux does not exist"]


def test_pam_service_file_present_is_ok(installed: Installed, planted: list[Path]) -> None:
    service = Path("/etc/pam.d/flux")
    if service.exists():
        pytest.skip("this machine has /etc/pam.d/flux")
    _imp_file(planted, "[exec]\nallowed-users = []\npam-support = true\n")
    shutil.copy("/usr/share/doc/flux-imp/examples/pam.d-flux", service)
    planted.append(service)
    assert "OK pam: /etc/pam.d/flux present, root-only" in _lines()


def test_cgroup_parent_missing_fails(installed: Installed, planted: list[Path]) -> None:
    _imp_file(planted, "[exec]\nallowed-users = []\n"
              "[exec.cgroup]\nparent = \"/sys/fs/cgroup/no-such-parent\"\n")
    assert _failures() == ["FAIL cgroup: parent /sys/fs/cgroup/no-such-parent does not exist"]


def test_cgroup_parent_outside_cgroup2_fails(installed: Installed,
                                             planted: list[Path]) -> None:
    _imp_file(planted, "[exec]\nallowed-users = []\n[exec.cgroup]\nparent = \"/etc\"\n")
    assert _failures() == ["FAIL cgroup: exec: cgroup: parent /etc is not in a cgroup2 hierarchy"]


def test_audit_required_without_syslog_fails(installed: Installed,
                                             planted: list[Path]) -> None:
    if os.path.exists("/dev/log"):
        pytest.skip("syslog listens on /dev/log here")
    _imp_file(planted, "audit-required = true\n")
    assert _failures() == ["FAIL audit: /dev/log: No such file or directory: with "
                           "audit-required, the IMP refuses every command"]


def _ca(planted: list[Path], root: Path, ttl: int) -> Path:
    """A CA cert made by the CA library, valid ``ttl`` seconds, in [ca]."""
    table = ca_table(root, **{"max-cert-ttl": 2 * 365 * 86400})
    ca = CA(table)
    ca.keygen(ttl=ttl)
    ca.store()
    (root / "revoke.d").mkdir(mode=0o755)
    _imp_file(planted, "[ca]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()))
    return root


@pytest.fixture
def ca_root() -> Iterator[Path]:
    with users.world_dir("fluximp-check-ca-") as root:
        yield root


def test_a_valid_ca_is_ok(installed: Installed, planted: list[Path], ca_root: Path) -> None:
    _ca(planted, ca_root, 365 * 86400)
    lines = _lines()
    assert any(line.startswith(f"OK ca (imp-config): {ca_root}/ca.pub valid until ")
               for line in lines), lines
    assert f"OK ca (imp-config): revoke-dir {ca_root}/revoke.d: a root-only directory" in lines
    assert not [line for line in lines if line.startswith("FAIL ")]


def test_a_ca_near_expiry_warns(installed: Installed, planted: list[Path],
                                ca_root: Path) -> None:
    _ca(planted, ca_root, 86400)
    assert any(line.startswith(f"WARN ca (imp-config): {ca_root}/ca.pub expires on ")
               for line in _lines())


def test_a_world_writable_revoke_dir_fails(installed: Installed, planted: list[Path],
                                           ca_root: Path) -> None:
    _ca(planted, ca_root, 365 * 86400)
    (ca_root / "revoke.d").chmod(0o777)
    assert _failures() == [f"FAIL ca (imp-config): revoke-dir: {ca_root}/revoke.d: "
                           "not owned by root, or writable by group or others"]


def test_an_unreadable_ca_cert_fails(installed: Installed, planted: list[Path],
                                     ca_root: Path) -> None:
    _ca(planted, ca_root, 365 * 86400)
    (ca_root / "ca.pub").unlink()
    failures = _failures()
    assert len(failures) == 1 and failures[0].startswith(
        f"FAIL ca (imp-config): {ca_root}/ca: "), failures
