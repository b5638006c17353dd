"""The Debian package: built by ``make -C packaging deb``, checked by lintian,
installed, and driven end to end through the installed
``/usr/libexec/flux/flux-imp`` (not a test build) as a site would.

The module installs the package once, configures /etc/flux, and on exit
purges the package (unless it was installed before) and puts /etc/flux
back as it was.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flux_imp import __version__
from flux_imp.imp.unprivileged import version

from . import sitepkg, users
from .sitepkg import IMP_CONF, SITE
from .syslogtrap import AUTHPRIV_NOTICE, syslog_trap

PROLOG = "#!/bin/sh\n/usr/bin/id -u\n"


@dataclass(frozen=True)
class Site:
    deb: Path
    owner: pwd.struct_passwd  # the instance owner, in allowed-users
    guest: pwd.struct_passwd  # submits jobs
    other: pwd.struct_passwd  # neither
    tmp: Path


def _need_dpkg() -> None:
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    if not os.path.exists("/usr/bin/dpkg-buildpackage"):
        pytest.skip("not a Debian system with dpkg-dev (packaging/dev/setup.sh installs it)")


@pytest.fixture(scope="module")
def deb() -> Path:
    _need_dpkg()
    return sitepkg.build_deb()


@pytest.fixture(scope="module")
def site(deb: Path) -> Iterator[Site]:
    before = sitepkg.installed_version()
    with sitepkg.saved_etc_flux():
        sitepkg.install_deb(deb)
        try:
            with sitepkg.system_munged(), users.world_dir("fluximp-pkg-") as tmp, \
                    users.temp_user("fluximp-pkg-owner", tmp / "owner") as owner, \
                    users.temp_user("fluximp-pkg-guest", tmp / "guest") as guest, \
                    users.temp_user("fluximp-pkg-other", tmp / "other") as other:
                prolog = tmp / "prolog"
                prolog.write_text(PROLOG)
                prolog.chmod(0o755)
                sitepkg.write_imp_config(
                    "test.toml", IMP_CONF.format(owner=owner.pw_name, prolog=prolog))
                yield Site(deb, owner, guest, other, tmp)
        finally:
            if before is None:
                sitepkg.purge_package()


def _fatal(result: subprocess.CompletedProcess[bytes], message: str) -> None:
    assert (result.returncode, result.stderr.decode()) == (1, f"flux-imp: Fatal: {message}\n")
    assert result.stdout == b""


# ------------------------------------------------------------ the .deb itself


def test_lintian_reports_no_error_or_warning(deb: Path) -> None:
    result = subprocess.run(["lintian", "--fail-on", "error,warning", str(deb)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    found = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert (result.returncode, found) == (0, []), result.stdout + result.stderr


def _contents(deb: Path) -> dict[str, tuple[str, str]]:
    """path -> (mode string, owner/group) of every entry of the .deb."""
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    entries = {}
    for line in listing.splitlines():
        mode, owner, _size, _date, _time, path, *_ = line.split()
        entries[path.lstrip(".").rstrip("/") or "/"] = (mode, owner)
    return entries


def test_deb_ships_the_setuid_launcher_and_what_a_site_needs(deb: Path) -> None:
    files = _contents(deb)
    assert files[sitepkg.IMP] == ("-rwsr-xr-x", "root/root")
    # The lingering helper, named flux-imp in a directory of its own: root's,
    # 0755, not setuid.
    assert files[sitepkg.HELPER] == ("-rwxr-xr-x", "root/root")
    assert files["/usr/bin/flux-sign"][0] == "-rwxr-xr-x"
    for path in ("/etc/flux/imp/conf.d", "/etc/flux/security/conf.d/sign.toml",
                 "/usr/share/doc/flux-imp/README.Debian",
                 "/usr/share/doc/flux-imp/examples/imp.toml",
                 "/usr/share/doc/flux-imp/examples/sign-curve-ca.toml",
                 "/usr/share/doc/flux-imp/examples/pam.d-flux",
                 f"{SITE}/flux_imp/imp/main.py", f"{SITE}/flux_imp/sign/token.py",
                 "/usr/share/man/man8/flux-imp.8.gz", "/usr/share/man/man1/flux-sign.1.gz",
                 "/usr/share/man/man5/flux-config-security.5.gz",
                 "/usr/share/man/man5/flux-config-security-imp.5.gz",
                 "/usr/share/man/man5/flux-config-security-sign.5.gz"):
        assert path in files, path
    # Everything root-owned; nothing but the launcher setuid or writable by others.
    assert {owner for _, owner in files.values()} == {"root/root"}
    assert [p for p, (mode, _) in files.items() if "s" in mode] == [sitepkg.IMP]
    assert [p for p, (mode, _) in files.items() if mode[8] == "w" and mode[0] != "l"] == []
    # No libflux-security: flux-core keeps upstream's.
    assert not [p for p in files if "libflux-security" in p]


def _control(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_deb_depends_on_the_distributions_builds(deb: Path) -> None:
    depends = {d.strip() for d in _control(deb, "Depends").replace("\n", " ").split(",")}
    for dep in ("python3-nacl", "python3-click", "python3-prctl", "libmunge2", "libpam0g",
                "python3 (>= 3.9)", "python3-tomli | python3 (>> 3.11)"):
        assert dep in depends, (dep, depends)


def test_deb_marks_the_signing_config_as_a_conffile(deb: Path) -> None:
    conffiles = subprocess.run(["dpkg-deb", "--info", str(deb), "conffiles"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert conffiles.split() == ["/etc/flux/security/conf.d/sign.toml"]


# ------------------------------------------------------------ as installed


def test_installed_modules_are_byte_compiled(site: Site) -> None:
    """The launcher runs Python with -B: without .pyc every start compiles."""
    code = "import sys;print(sys.implementation.cache_tag)"
    tag = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    modules = sorted((SITE / "flux_imp").rglob("*.py"))
    assert modules
    for module in modules:
        pyc = module.parent / "__pycache__" / f"{module.stem}.{tag}.pyc"
        assert pyc.is_file(), pyc
        st = pyc.stat()
        assert st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), pyc


def test_the_interpreter_path_holds_only_root_owned_package_dirs(site: Site) -> None:
    """What the privileged interpreter searches: the stdlib and dist-packages."""
    code = "import sys;sys.path.append('/usr/lib/python3/dist-packages');print(*sys.path[1:])"
    paths = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", code],
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    for path in paths:
        if not os.path.exists(path):
            continue  # e.g. the stdlib zip, which Debian does not ship
        owner = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True,
                               check=False)  # fmt: skip
        assert owner.returncode == 0, f"{path} belongs to no package"
        st = os.stat(path)
        assert st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path


def test_the_helper_is_installed_root_0755_named_flux_imp(site: Site) -> None:
    st = os.lstat(sitepkg.HELPER)
    assert stat.S_ISREG(st.st_mode)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    # The process keeps its file's name: flux-imp, what flux-core looks for.
    assert os.path.basename(sitepkg.HELPER) == os.path.basename(sitepkg.IMP) == "flux-imp"
    parent = os.stat(os.path.dirname(sitepkg.HELPER))
    assert parent.st_uid == 0 and stat.S_IMODE(parent.st_mode) == 0o755
    with open(sitepkg.HELPER, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    # The installed launcher was built to hand its jobs to this one.
    assert f',proxy="{sitepkg.HELPER}")'.encode() in Path(sitepkg.IMP).read_bytes()


def test_diversion_of_upstreams_imp(site: Site) -> None:
    listed = subprocess.run(["dpkg-divert", "--list", sitepkg.IMP], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert f"diversion of {sitepkg.IMP} to {sitepkg.IMP}.flux-security by flux-imp" in listed


def test_version(site: Site) -> None:
    result = sitepkg.imp(site.owner, ["version"])
    pam = "+pam\n" if version.pam_available() else ""
    assert (result.returncode, result.stdout.decode(), result.stderr) == (
        0, f"flux-imp v{__version__}\n{pam}", b"")


def test_whoami(site: Site) -> None:
    result = sitepkg.imp(site.owner, ["whoami"])
    assert result.returncode == 0, result.stderr
    o = site.owner
    assert f"flux-imp: privileged: uid={o.pw_uid} euid=0 gid={o.pw_gid} egid={o.pw_gid}" \
        in result.stdout.decode()


def test_flux_security_is_where_flux_finds_subcommands(site: Site) -> None:
    """flux(1) runs $libexecdir/flux/cmd/flux-NAME for "flux NAME"."""
    for path in ("/usr/bin/flux-security", "/usr/libexec/flux/cmd/flux-security"):
        result = subprocess.run([path, "--version"], capture_output=True, text=True,
                                check=False)  # fmt: skip
        assert (result.returncode, result.stdout) == (0, f"flux-security {__version__}\n")
    assert os.path.realpath("/usr/libexec/flux/cmd/flux-security") == "/usr/bin/flux-security"
    assert Path("/usr/share/man/man8/flux-security.8.gz").is_file()


def test_flux_sign_version(site: Site) -> None:
    result = subprocess.run([sitepkg.FLUX_SIGN, "--version"], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout


def test_guest_job_started_by_the_owner_with_an_audit_record(site: Site) -> None:
    token = sitepkg.sign(site.guest, b'{"version": 1}')
    with users.world_dir("fluximp-audit-") as tmp, syslog_trap(tmp) as trap:
        result = sitepkg.imp(site.owner, ["exec", "/usr/bin/id", "-u"],
                             sitepkg.exec_input(token), preexec=trap.preexec())
        records = trap.records()
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"{site.guest.pw_uid}\n".encode(), b"")
    [(priority, text)] = records
    assert priority == AUTHPRIV_NOTICE
    assert text.startswith("exec half=\"privileged\"")
    assert f'target="{site.guest.pw_name}"' in text and 'outcome="allowed"' in text


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""  # gone, or a zombie


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _uids(pid: int) -> list[int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return [int(w) for w in next(ln for ln in status if ln.startswith("Uid:")).split()[1:]]


def test_a_running_guest_jobs_lingering_parent_is_the_helper(site: Site) -> None:
    """Once the job runs, the IMP's root parent is the helper (flux-imp-proxy.c),
    named flux-imp (what flux-core and ps show), and forwards signals to the job."""
    token = sitepkg.sign(site.guest, b'{"version": 1}')
    rfd, wfd = os.pipe()  # the request, whole, then end of file
    os.write(wfd, sitepkg.exec_input(token))
    os.close(wfd)
    with os.fdopen(rfd, "rb") as request:
        proc = subprocess.Popen(sitepkg.as_user(site.owner, [sitepkg.IMP, "exec",
                                                              "/usr/bin/sleep", "600"]),
                                cwd="/", stdin=request, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
    jobs: list[int] = []
    try:
        # The parent hands over after the fork, the child execs the job
        # after its own steps: wait for both (a bound, not a timing goal).
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            jobs = _children(proc.pid)
            if _exe(proc.pid) == sitepkg.HELPER and [_exe(j) for j in jobs] == ["/usr/bin/sleep"]:
                break
            time.sleep(0.01)
        assert _exe(proc.pid) == sitepkg.HELPER
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "flux-imp\n"
        assert _uids(proc.pid)[:2] == [site.owner.pw_uid, 0]  # the caller's, root's
        [job] = jobs
        assert _exe(job) == "/usr/bin/sleep"
        assert _uids(job) == [site.guest.pw_uid] * 4
        os.kill(proc.pid, signal.SIGTERM)  # forwarded to the job; the IMP exits as it did
        _, stderr = proc.communicate(timeout=60)
        assert (proc.returncode, stderr) == (-signal.SIGTERM, b"")
        assert not os.path.exists(f"/proc/{job}")
    finally:
        for pid in [*jobs, *([proc.pid] if proc.poll() is None else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # never leave the guest's job behind
        proc.wait()


def test_refuses_a_user_not_allowed(site: Site) -> None:
    token = sitepkg.sign(site.guest, b'{"version": 1}')
    result = sitepkg.imp(site.other, ["exec", "/usr/bin/id", "-u"], sitepkg.exec_input(token))
    _fatal(result, f"exec: user {site.other.pw_name} not in allowed-users list")


def test_refuses_a_shell_not_allowed(site: Site) -> None:
    token = sitepkg.sign(site.guest, b'{"version": 1}')
    result = sitepkg.imp(site.owner, ["exec", "/bin/sh", "-c", "id"], sitepkg.exec_input(token))
    _fatal(result, "exec: shell not in allowed-shells")


def test_refuses_a_tampered_request(site: Site) -> None:
    token = sitepkg.tamper(sitepkg.sign(site.guest, b'{"version": 1}'))
    result = sitepkg.imp(site.owner, ["exec", "/usr/bin/id", "-u"], sitepkg.exec_input(token))
    assert result.returncode == 1 and result.stdout == b""
    assert re.fullmatch(rb"flux-imp: Fatal: exec: signature validation failed: .+\n",
                        result.stderr), result.stderr


def test_run_prolog_as_root(site: Site) -> None:
    result = sitepkg.imp(site.owner, ["run", "prolog"])
    assert (result.returncode, result.stdout, result.stderr) == (0, b"0\n", b"")


def test_run_refused_to_a_user_not_allowed(site: Site) -> None:
    _fatal(sitepkg.imp(site.other, ["run", "prolog"]), "run: permission denied")


def _fake_upstream_deb(tmp: Path) -> Path:
    """A stand-in for upstream's flux-security package: its IMP and library."""
    root = tmp / "fake-flux-security"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: flux-security\nVersion: 0.15.0-0test\nArchitecture: all\n"
        "Maintainer: tests <tests@localhost>\nDescription: stand-in for upstream's package\n")
    imp = root / sitepkg.IMP.lstrip("/")
    imp.parent.mkdir(parents=True)
    imp.write_text("#!/bin/sh\necho upstream\n")
    imp.chmod(0o755)
    lib = root / "usr/lib/libflux-security.so.1"
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.write_text("")
    deb = tmp / "flux-security.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(deb)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return deb


def test_upstreams_package_installs_beside_ours_diverted(site: Site) -> None:
    deb = _fake_upstream_deb(site.tmp)
    subprocess.run(["dpkg", "-i", str(deb)], check=True, stdout=subprocess.DEVNULL)
    try:
        ours = Path(sitepkg.IMP).read_bytes()
        assert b"flux-imp-build-kind=installed" in ours
        assert Path(f"{sitepkg.IMP}.flux-security").read_text() == "#!/bin/sh\necho upstream\n"
        assert Path("/usr/lib/libflux-security.so.1").exists()
        assert sitepkg.imp(site.owner, ["version"]).returncode == 0
    finally:
        subprocess.run(["dpkg", "--purge", "flux-security"], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    assert not os.path.exists(f"{sitepkg.IMP}.flux-security")
    assert os.stat(sitepkg.IMP).st_mode & stat.S_ISUID
