"""The setuid launcher (packaging/launcher/flux-imp.c), run as a real user.

A test build starts ``tests.launcher_probe`` instead of the IMP; the probe
prints what Python sees.  Each attack a caller can mount on a setuid
interpreter must leave that report unchanged, or make the launcher refuse.
The launch-data reader (flux_imp/imp/launch.py) is unit-tested at the end.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import pwd
import resource
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_imp.imp import launch
from flux_imp.imp.launch import LaunchDataError, parse_launch_data, read_launch_data

from . import impenv, users

TOP = Path(__file__).resolve().parent.parent
LAUNCHER_SRC = TOP / "packaging" / "launcher"
# A venv's bin/python is a symlink to the system interpreter; with -S the
# venv is not used anyway, so build against the real file.
PYTHON = os.path.realpath(sys.executable)
VENV_SITE = sysconfig.get_paths()["purelib"]
PROBE = "tests.launcher_probe"
MEMFD_NAME = "/memfd:flux-imp-launch (deleted)"
INSECURE = b": not owned by root, or writable by group or others\n"
# Variables glibc's secure mode deletes at start-up of a setuid program
# (INTEROP.md section 4.4; glibc 2.36).
GLIBC_UNSECURE = (
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LD_AUDIT",
    "LD_DEBUG",
    "LD_DEBUG_OUTPUT",
    "LD_DYNAMIC_WEAK",
    "LD_HWCAP_MASK",
    "LD_LIBRARY_PATH",
    "LD_ORIGIN_PATH",
    "LD_PRELOAD",
    "LD_PROFILE",
    "LD_SHOW_AUXV",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_CHECK_",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
)

EVIL_SO = r"""
#include <unistd.h>
__attribute__((constructor)) static void pwn(void) { (void)!write(2, "PWNED\n", 6); }
"""
# Makes close_range fail as on old kernels or seccomp filters, to exercise
# the launcher's /proc/self/fd fallback (usable only when not setuid).
NO_CLOSE_RANGE_SO = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>
long syscall(long n, ...)
{
    va_list ap;
    long a[6];
    va_start(ap, n);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == 436) {
        (void)!write(2, "SHIM: close_range\n", 18);
        errno = ENOSYS;
        return -1;
    }
    long (*real)(long, ...) = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
"""


# ---------------------------------------------------------------- building


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        print("test_launcher: skipping, gcc is not installed")
        pytest.skip("gcc is not installed")
    return gcc


def _normalize_modes(top: Path) -> None:
    """Root-owned, world-readable, writable by root only (what the launcher demands)."""
    for path in [top, *top.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def make_site(dest: Path) -> Path:
    """A SITEDIR with this tree's ``flux_imp`` and the probe as ``tests.launcher_probe``."""
    shutil.copytree(
        TOP / "flux_imp", dest / "flux_imp", ignore=shutil.ignore_patterns("__pycache__")
    )
    (dest / "tests").mkdir()
    shutil.copy(TOP / "tests" / "__init__.py", dest / "tests" / "__init__.py")
    shutil.copy(TOP / "tests" / "launcher_probe.py", dest / "tests" / "launcher_probe.py")
    # Byte-compiled, as a package install leaves it (the launcher runs -B).
    compileall.compile_dir(str(dest / "flux_imp"), quiet=1)
    _normalize_modes(dest)
    return dest


def run_make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", "-C", str(LAUNCHER_SRC), *args], capture_output=True, text=True
    )


def build(out: Path, *, python: str = PYTHON, sitedir: Path, module: str = PROBE) -> Path:
    """Compile a launcher to ``out`` and make it setuid root."""
    test_build = "1" if module == PROBE else "0"
    made = run_make(
        f"PYTHON={python}", f"SITEDIR={sitedir}", f"MODULE={module}",
        f"TEST_BUILD={test_build}", f"OUT={out}",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return impenv.make_setuid(out)


@pytest.fixture(scope="session")
def prefix(setuid_gate: impenv.Gate) -> Iterator[Path]:
    _gcc()
    old = os.umask(0o022)
    try:
        with impenv.gated_dir(setuid_gate, "fluximp-launcher-") as path:
            yield path
    finally:
        os.umask(old)


@pytest.fixture(scope="session")
def site(prefix: Path) -> Path:
    return make_site(prefix / "site")


@pytest.fixture(scope="session")
def launcher(prefix: Path, site: Path) -> Path:
    """The probe launcher (a test build), installed setuid root.

    ``make install`` refuses test builds, so this installs as it would."""
    out = build(prefix / "build-flux-imp", sitedir=site)
    installed = prefix / "inst" / "libexec" / "flux-imp"
    installed.parent.mkdir(parents=True)
    subprocess.run(["install", "-o", "root", "-g", "root", "-m", "4755", str(out),
                    str(installed)], check=True)
    st_ = installed.stat()
    assert (st_.st_uid, stat.S_IMODE(st_.st_mode)) == (0, 0o4755)
    return installed


@pytest.fixture(scope="session")
def libs(prefix: Path) -> Path:
    """evil.so (prints PWNED when loaded), its copies as libraries, the close_range shim."""
    gcc = _gcc()
    libs = prefix / "libs"
    libs.mkdir()
    for name, source in (("evil", EVIL_SO), ("noclose", NO_CLOSE_RANGE_SO)):
        (libs / f"{name}.c").write_text(source)
        subprocess.run(
            [gcc, "-shared", "-fPIC", "-o", str(libs / f"{name}.so"), str(libs / f"{name}.c")],
            check=True,
        )
    for soname in ("libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1"):
        shutil.copy(libs / "evil.so", libs / soname)
    _normalize_modes(libs)
    return libs


@pytest.fixture(scope="session")
def evil(prefix: Path, guest: pwd.struct_passwd, libs: Path) -> Path:
    """A caller-owned directory of modules that print PWNED if ever imported."""
    evil = prefix / "evil"
    pwn = "import sys; sys.stderr.write('PWNED\\n'); print('PWNED')\n"
    for rel in (
        "flux_imp/__init__.py",
        "flux_imp/imp/__init__.py",
        "flux_imp/imp/launch.py",
        "tests/__init__.py",
        "tests/launcher_probe.py",
        "launcher_probe.py",
        "sitecustomize.py",
        "usercustomize.py",
        "startup.py",
        "json.py",
        "encodings/__init__.py",
        "lib/python3.11/os.py",
        f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages/sitecustomize.py",
    ):
        (evil / rel).parent.mkdir(parents=True, exist_ok=True)
        (evil / rel).write_text(pwn)
    (evil / "pwn.pth").write_text("import sys; print('PWNED')\n")
    for path in [evil, *evil.rglob("*")]:
        os.chown(path, guest.pw_uid, guest.pw_gid)
    return evil


# ----------------------------------------------------------------- running


def default_env(user: pwd.struct_passwd) -> dict[bytes, bytes]:
    return {
        b"PATH": b"/usr/bin:/bin",
        b"HOME": os.fsencode(user.pw_dir),
        b"USER": os.fsencode(user.pw_name),
        b"FLUX_JOB_ID": "ƒ1".encode(),
    }


def run(
    launcher: Path,
    args: Sequence[str | bytes] = (),
    *,
    user: pwd.struct_passwd | None,
    env: Mapping[bytes, bytes] | None = None,
    cwd: Path | str | None = None,
    setup: Callable[[], None] | None = None,
    wrapper: Sequence[str] = (),
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``launcher`` as ``user`` (None: as root), ``setup`` last before exec.

    ``wrapper`` is a command prefix that ends by exec'ing the launcher.
    """

    def preexec() -> None:
        if user is not None:
            users.become(user)()
        if setup is not None:
            setup()

    if env is None:
        env = default_env(user) if user is not None else {b"PATH": b"/usr/bin:/bin"}
    return subprocess.run(
        [*wrapper, str(launcher), *args],
        env=env,
        cwd=cwd if cwd is not None else (user.pw_dir if user is not None else "/"),
        input=stdin if stdin is not None else b"",
        capture_output=True,
        preexec_fn=preexec,
        timeout=60,
    )


def report_of(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"PWNED" not in proc.stdout + proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def stable(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything but the caller's environment and pipe inode names."""
    view = {k: v for k, v in report.items() if k not in ("launch", "fds", "fds_at_start")}
    view["fd_numbers"] = (sorted(report["fds_at_start"]), sorted(report["fds"]))
    view["via_launcher"] = report["launch"].get("via_launcher")
    return view


def launch_env(report: Mapping[str, Any]) -> list[bytes]:
    return [os.fsencode(entry) for entry in report["launch"]["environ"]]


def env_names(report: Mapping[str, Any]) -> set[bytes]:
    return {entry.split(b"=", 1)[0] for entry in launch_env(report)}


@pytest.fixture(scope="session")
def baseline(launcher: Path, guest: pwd.struct_passwd) -> dict[str, Any]:
    return report_of(run(launcher, user=guest))


# ------------------------------------------------------ what Python sees


def test_runs_with_euid_root_and_the_callers_real_ids(
    baseline: dict[str, Any], guest: pwd.struct_passwd
) -> None:
    assert baseline["resuid"] == [guest.pw_uid, 0, 0]
    assert baseline["resgid"] == [guest.pw_gid] * 3
    assert baseline["groups"] == []
    assert baseline["test_build"] == 1


def test_interpreter_is_isolated(baseline: dict[str, Any], site: Path) -> None:
    flags = baseline["flags"]
    for name in ("isolated", "no_site", "ignore_environment", "dont_write_bytecode"):
        assert flags[name] == 1, name
    assert flags["no_user_site"] == 1
    assert baseline["site_loaded"] == []
    assert baseline["executable"] == PYTHON
    # The standard library first, then SITEDIR; no cwd, no site-packages.
    assert baseline["path"][-1] == str(site)
    for entry in baseline["path"][:-1]:
        assert entry.startswith(f"{sys.base_prefix}/lib/python"), entry
        assert "-packages" not in entry
    assert baseline["launch_loader"] == "Loader"  # flux_imp/imp/loader.py's
    assert baseline["modules"] == {
        "flux_imp": f"{site}/flux_imp/__init__.py",
        "flux_imp.imp.launch": f"{site}/flux_imp/imp/launch.py",
        "tests": f"{site}/tests/__init__.py",
        "tests.launcher_probe": f"{site}/tests/launcher_probe.py",
    }


def test_interpreter_environment_is_only_lc_all(baseline: dict[str, Any]) -> None:
    # No locale coercion either: LC_ALL=C.UTF-8 is already a UTF-8 locale.
    assert baseline["environ"] == {"LC_ALL": "C.UTF-8"}
    assert baseline["stdout_encoding"] == "utf-8"


def test_launch_data_is_the_callers_environment_in_order(
    launcher: Path, guest: pwd.struct_passwd
) -> None:
    env = {**default_env(guest), b"ZZZ": b"1", b"AAA": b"two=2", b"EMPTY": b""}
    report = report_of(run(launcher, user=guest, env=env))
    assert report["launch"]["via_launcher"] is True
    assert launch_env(report) == [k + b"=" + v for k, v in env.items()]


def test_launch_data_round_trips_utf8_and_undecodable_bytes(
    launcher: Path, guest: pwd.struct_passwd
) -> None:
    env = {b"FLUX_JOB_ID": "ƒ1".encode(), b"RAW": b"\xff\xfe\x80", "ÉTÉ".encode(): b"x"}
    report = report_of(run(launcher, user=guest, env=env))
    assert launch_env(report) == [k + b"=" + v for k, v in env.items()]
    assert report["launch"]["environ"][0] == "FLUX_JOB_ID=ƒ1"


def test_empty_environment(launcher: Path, guest: pwd.struct_passwd) -> None:
    report = report_of(run(launcher, user=guest, env={}))
    assert report["launch"]["environ"] == []
    assert report["environ"] == {"LC_ALL": "C.UTF-8"}


def test_argv_passes_through_verbatim(launcher: Path, guest: pwd.struct_passwd) -> None:
    args: list[str | bytes] = ["exec", "a b", "", "ƒ", "-I", "--", "\t", "-c", b"\xff"]
    report = report_of(run(launcher, args, user=guest))
    assert report["argv"] == ["-c", *(os.fsdecode(a) for a in args)]


def test_no_arguments(launcher: Path, guest: pwd.struct_passwd) -> None:
    assert report_of(run(launcher, user=guest))["argv"] == ["-c"]


# ----------------------------------------------------------------- attacks


ATTACKS: dict[str, dict[str, str]] = {
    "PYTHONPATH": {"PYTHONPATH": "{evil}"},
    "PYTHONSTARTUP": {"PYTHONSTARTUP": "{evil}/startup.py", "PYTHONINSPECT": "1"},
    "PYTHONINSPECT": {"PYTHONINSPECT": "1"},
    "PYTHONHOME": {"PYTHONHOME": "{evil}"},
    "PYTHONSAFEPATH": {"PYTHONSAFEPATH": "1"},
    "PYTHONUSERBASE": {"PYTHONUSERBASE": "{evil}", "PYTHONNOUSERSITE": ""},
    "PYTHONPLATLIBDIR": {"PYTHONPLATLIBDIR": "{evil}"},
    "PYTHONWARNINGS": {"PYTHONWARNINGS": "error"},
    "PYTHONVERBOSE": {"PYTHONVERBOSE": "1"},
    "PYTHONDEVMODE": {"PYTHONDEVMODE": "1"},
    "PYTHONUTF8": {"PYTHONUTF8": "1"},
    "PYTHONIOENCODING": {"PYTHONIOENCODING": "latin-1"},
    "PYTHONPYCACHEPREFIX": {"PYTHONPYCACHEPREFIX": "{evil}/pycache"},
    "PYTHONMALLOC": {"PYTHONMALLOC": "debug"},
    "PYTHONPROFILEIMPORTTIME": {"PYTHONPROFILEIMPORTTIME": "1"},
    "locale": {"LC_ALL": "C", "LANG": "C", "LC_CTYPE": "POSIX"},
    "LD_PRELOAD": {"LD_PRELOAD": "{libs}/evil.so"},
    "LD_LIBRARY_PATH": {"LD_LIBRARY_PATH": "{libs}"},
    "LD_AUDIT": {"LD_AUDIT": "{libs}/evil.so"},
    "LD_DEBUG": {"LD_DEBUG": "all"},
    "GCONV_PATH": {"GCONV_PATH": "{evil}"},
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_caller_environment_cannot_steer_python(
    attack: str,
    launcher: Path,
    guest: pwd.struct_passwd,
    baseline: dict[str, Any],
    evil: Path,
    libs: Path,
) -> None:
    extra = {
        k.encode(): v.format(evil=evil, libs=libs).encode() for k, v in ATTACKS[attack].items()
    }
    env = {**default_env(guest), **extra}
    proc = run(launcher, user=guest, env=env, cwd=evil, stdin=b"print('PWNED')\n")
    assert proc.stderr == b""
    report = report_of(proc)
    assert stable(report) == stable(baseline)
    # What glibc's secure mode removes is gone; the rest reaches the IMP as data.
    for name in extra:
        assert (name in env_names(report)) == (name.decode() not in GLIBC_UNSECURE), name
    assert not (evil / "pycache").exists()


def test_evil_library_is_a_real_threat(libs: Path, guest: pwd.struct_passwd) -> None:
    """Control: the LD_PRELOAD library used above does run where it is honoured."""
    proc = subprocess.run(
        ["/bin/true"],
        env={"LD_PRELOAD": str(libs / "evil.so")},
        preexec_fn=users.become(guest),
        capture_output=True,
    )
    assert b"PWNED" in proc.stderr


def test_glibc_secure_mode_list(launcher: Path, guest: pwd.struct_passwd) -> None:
    """Every variable in INTEROP 4.4's list is gone; others (e.g. LD_BIND_NOW) pass."""
    passing = [b"LD_BIND_NOW", b"TZ", b"LANG", b"SUDO_USER", b"FLUX_IMP_CONFIG_PATTERN"]
    env = {**default_env(guest), **{n.encode(): b"/x" for n in GLIBC_UNSECURE}}
    env.update({name: b"1" for name in passing})
    report = report_of(run(launcher, user=guest, env=env))
    names = env_names(report)
    assert names.isdisjoint(n.encode() for n in GLIBC_UNSECURE)
    assert set(passing) <= names


def test_callers_cwd_is_ignored(
    launcher: Path, guest: pwd.struct_passwd, baseline: dict[str, Any], evil: Path
) -> None:
    report = report_of(run(launcher, user=guest, cwd=evil))
    assert report["cwd"] == "/"
    assert report["launch"]["cwd"] == str(evil)  # data only, for the IMP's child
    assert stable(report) == stable(baseline)


def test_deleted_cwd_is_recorded_as_unknown(
    launcher: Path, guest: pwd.struct_passwd, baseline: dict[str, Any]
) -> None:
    def lose_cwd() -> None:
        gone = f"/tmp/fluximp-gone-{os.getpid()}"
        os.mkdir(gone)
        os.chdir(gone)
        os.rmdir(gone)

    report = report_of(run(launcher, user=guest, setup=lose_cwd))
    assert report["launch"]["cwd"] == ""
    assert stable(report) == stable(baseline)


def test_no_bytecode_is_written(baseline: dict[str, Any], site: Path) -> None:
    assert baseline["flags"]["dont_write_bytecode"] == 1
    # tests/ is imported uncompiled (flux_imp comes compiled, as installed).
    assert list((site / "tests").rglob("__pycache__")) == []


# --------------------------------------------------------- file descriptors


def _close_stdio() -> None:
    for fd in (0, 1, 2):
        os.close(fd)


def _run_with_closed_stdio(launcher: Path, user: pwd.struct_passwd | None) -> dict[str, Any]:
    with users.world_dir("fluximp-out-") as out:
        result = out / "report.json"
        proc = run(launcher, [f"--probe-out={result}"], user=user, setup=_close_stdio)
        assert proc.returncode == 0
        report: dict[str, Any] = json.loads(result.read_text())
    assert report["fds_at_start"]["3"] == MEMFD_NAME
    return report


def test_closed_stdio_is_reopened_setuid(
    launcher: Path, guest: pwd.struct_passwd, baseline: dict[str, Any]
) -> None:
    """glibc's secure mode already fills them (as for the C IMP): fd 0 with
    /dev/full write-only, 1 and 2 with /dev/null read-only; so nothing the
    IMP opens can become its stdin, stdout or stderr."""
    report = _run_with_closed_stdio(launcher, guest)
    assert [report["fds_at_start"][str(fd)] for fd in (0, 1, 2)] == [
        "/dev/full",
        "/dev/null",
        "/dev/null",
    ]
    assert report["resuid"] == baseline["resuid"]


def test_closed_stdio_is_reopened_by_the_launcher(launcher: Path) -> None:
    """Not setuid (root runs it), the launcher itself opens /dev/null."""
    report = _run_with_closed_stdio(launcher, None)
    assert [report["fds_at_start"][str(fd)] for fd in (0, 1, 2)] == ["/dev/null"] * 3
    assert report["resuid"] == [0, 0, 0]


_HOLD_FDS = """\
import os, resource, sys
numbers, nofile, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
read, write = os.pipe()
held = [os.open("/etc/passwd", os.O_RDONLY), read, write]
for i, number in enumerate(map(int, numbers.split(","))):
    os.dup2(held[i % 3], number)  # inheritable
if nofile:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
os.execv(argv[0], argv)
"""


def holding_fds(*numbers: int, nofile: int = 0) -> list[str]:
    """A wrapper that execs the launcher holding files and pipes at ``numbers``.

    With ``nofile``, it then lowers RLIMIT_NOFILE below the fds it holds.
    """
    return [PYTHON, "-c", _HOLD_FDS, ",".join(map(str, numbers)), str(nofile)]


def test_inherited_fds_are_closed(launcher: Path, guest: pwd.struct_passwd) -> None:
    report = report_of(run(launcher, user=guest, wrapper=holding_fds(3, 4, 5, 57, 900)))
    assert sorted(report["fds_at_start"]) == ["0", "1", "2", "3"]
    assert report["fds_at_start"]["3"] == MEMFD_NAME
    assert sorted(report["fds"]) == ["0", "1", "2"]  # the probe closed fd 3


def test_fds_above_a_lowered_rlimit_are_closed(launcher: Path, guest: pwd.struct_passwd) -> None:
    wrapper = holding_fds(3, 200, 500, nofile=64)
    report = report_of(run(launcher, user=guest, wrapper=wrapper))
    assert sorted(report["fds_at_start"]) == ["0", "1", "2", "3"]


@pytest.mark.parametrize("limit", [3, 4, 5, 6, 8, 16])
def test_tiny_rlimit_nofile_works_or_fails_closed(
    limit: int, launcher: Path, guest: pwd.struct_passwd, baseline: dict[str, Any]
) -> None:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = run(launcher, user=guest, setup=lower)
    if proc.returncode == 0:
        assert stable(report_of(proc))["resuid"] == baseline["resuid"]
    else:
        assert proc.stdout == b""


def test_close_range_fallback_uses_proc(launcher: Path, libs: Path) -> None:
    """Without close_range (old kernel, seccomp) fds are closed via /proc/self/fd.

    LD_PRELOAD only works when not setuid, so root runs the launcher directly.
    """
    env = {b"PATH": b"/usr/bin:/bin", b"LD_PRELOAD": os.fsencode(libs / "noclose.so")}
    proc = run(launcher, user=None, env=env, wrapper=holding_fds(3, 4, 5, 57, 900))
    assert proc.stderr == b"SHIM: close_range\n"
    report = json.loads(proc.stdout)
    assert report["resuid"] == [0, 0, 0]
    assert sorted(report["fds_at_start"]) == ["0", "1", "2", "3"]


# ------------------------------------------------------ signals, umask, cwd


def test_blocked_and_ignored_signals_are_reset(
    launcher: Path, guest: pwd.struct_passwd, baseline: dict[str, Any]
) -> None:
    def plant() -> None:
        sigs = {signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGINT, signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)

    report = report_of(run(launcher, user=guest, setup=plant))
    assert report["blocked"] == []
    # Python itself ignores SIGPIPE and SIGXFSZ; nothing else may be ignored.
    assert report["ignored"] == baseline["ignored"] == [signal.SIGPIPE, signal.SIGXFSZ]
    assert report["sigint_default_handler"] is True


@pytest.mark.parametrize("mask", [0o000, 0o077, 0o027, 0o777])
def test_umask_is_data_python_runs_with_022(
    mask: int, launcher: Path, guest: pwd.struct_passwd
) -> None:
    def set_umask() -> None:
        os.umask(mask)

    report = report_of(run(launcher, user=guest, setup=set_umask))
    assert report["launch"]["umask"] == mask
    assert report["umask"] == 0o022


def test_cwd_is_root(baseline: dict[str, Any], guest: pwd.struct_passwd) -> None:
    assert baseline["cwd"] == "/"
    assert baseline["launch"]["cwd"] == guest.pw_dir  # where run() starts it


def test_copied_launcher_keeps_working(
    launcher: Path, guest: pwd.struct_passwd, baseline: dict[str, Any], setuid_gate: impenv.Gate
) -> None:
    with impenv.gated_dir(setuid_gate, "fluximp-copy-") as elsewhere:
        copy = elsewhere / "renamed"
        shutil.copy(launcher, copy)
        impenv.make_setuid(copy)
        report = report_of(run(copy, user=guest))
    assert stable(report) == stable(baseline)


# ------------------------------------------------------- insecure installs


def refused(proc: subprocess.CompletedProcess[bytes], path: Path | str) -> None:
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr == b"flux-imp: Fatal: " + os.fsencode(path) + INSECURE


@pytest.mark.parametrize(
    "spoil",
    ["package group-writable", "package owned by user", "sitedir world-writable",
     "sitedir owned by user", "sitedir group-writable"],
)  # fmt: skip
def test_insecure_sitedir_is_refused(
    spoil: str, guest: pwd.struct_passwd, prefix: Path, baseline: dict[str, Any],
    setuid_gate: impenv.Gate,
) -> None:
    with impenv.gated_dir(setuid_gate, "fluximp-site-") as top:
        site = make_site(top / "site")
        exe = build(top / "flux-imp", sitedir=site)
        assert stable(report_of(run(exe, user=guest)))["resuid"] == baseline["resuid"]
        target = site / "flux_imp" if spoil.startswith("package") else site
        if spoil.endswith("owned by user"):
            os.chown(target, guest.pw_uid, guest.pw_gid)
        else:
            target.chmod(0o757 if "world" in spoil else 0o775)
        refused(run(exe, user=guest), target)


def test_insecure_sitedir_parent_is_refused(
    guest: pwd.struct_passwd, setuid_gate: impenv.Gate
) -> None:
    with impenv.gated_dir(setuid_gate, "fluximp-site-") as top:
        site = make_site(top / "a" / "site")
        (top / "a").chmod(0o775)
        refused(run(build(top / "flux-imp", sitedir=site), user=guest), top / "a")


def test_sticky_world_writable_ancestor_is_accepted(
    guest: pwd.struct_passwd, baseline: dict[str, Any], setuid_gate: impenv.Gate
) -> None:
    """Like /tmp: others cannot rename root's entries in a sticky directory."""
    with impenv.gated_dir(setuid_gate, "fluximp-site-") as top:
        site = make_site(top / "sticky" / "site")
        (top / "sticky").chmod(0o1777)
        report = report_of(run(build(top / "flux-imp", sitedir=site), user=guest))
    assert report["resuid"] == baseline["resuid"]


def test_sitearch_follows_sitedir_and_must_be_root_only(
    guest: pwd.struct_passwd, site: Path, setuid_gate: impenv.Gate
) -> None:
    """SITEARCH (Fedora's lib64 site-packages) goes on sys.path after SITEDIR."""
    with impenv.gated_dir(setuid_gate, "fluximp-site-") as top:
        arch = top / "arch"
        arch.mkdir()
        exe = top / "flux-imp"
        made = run_make(f"PYTHON={PYTHON}", f"SITEDIR={site}", f"SITEARCH={arch}",
                        f"MODULE={PROBE}", "TEST_BUILD=1", f"OUT={exe}")
        assert made.returncode == 0, made.stderr
        impenv.make_setuid(exe)
        assert report_of(run(exe, user=guest))["path"][-2:] == [str(site), str(arch)]
        arch.chmod(0o777)
        refused(run(exe, user=guest), arch)


def test_sticky_sitedir_is_refused(guest: pwd.struct_passwd, setuid_gate: impenv.Gate) -> None:
    """SITEDIR is on sys.path: a sticky one still lets anyone add modules."""
    with impenv.gated_dir(setuid_gate, "fluximp-site-") as top:
        site = make_site(top / "site")
        site.chmod(0o1777)
        refused(run(build(top / "flux-imp", sitedir=site), user=guest), site)


@pytest.mark.parametrize("spoil", ["file group-writable", "file owned by user", "dir writable"])
def test_insecure_interpreter_is_refused(
    spoil: str, guest: pwd.struct_passwd, site: Path, setuid_gate: impenv.Gate
) -> None:
    with impenv.gated_dir(setuid_gate, "fluximp-python-") as top:
        python = top / "bin" / "python3"
        python.parent.mkdir(mode=0o755)
        shutil.copy(PYTHON, python)
        python.chmod(0o755)
        exe = build(top / "flux-imp", python=str(python), sitedir=site)
        if spoil == "file group-writable":
            python.chmod(0o775)
            target = python
        elif spoil == "file owned by user":
            os.chown(python, guest.pw_uid, guest.pw_gid)
            target = python
        else:
            python.parent.chmod(0o777)
            target = python.parent
        refused(run(exe, user=guest), target)


def test_interpreter_symlink_is_followed(
    guest: pwd.struct_passwd, site: Path, baseline: dict[str, Any], setuid_gate: impenv.Gate
) -> None:
    """A venv-style symlink works; its target and the link's directory are both checked."""
    with impenv.gated_dir(setuid_gate, "fluximp-python-") as top:
        bindir = top / "bin"
        bindir.mkdir(mode=0o755)
        (bindir / "python").symlink_to(PYTHON)
        exe = build(top / "flux-imp", python=str(bindir / "python"), sitedir=site)
        report = report_of(run(exe, user=guest))
        assert report["executable"] == str(bindir / "python")
        assert report["resuid"] == baseline["resuid"]
        bindir.chmod(0o775)  # whoever writes bin/ can repoint the link
        refused(run(exe, user=guest), bindir)


def test_symlink_to_insecure_interpreter_is_refused(
    guest: pwd.struct_passwd, site: Path, setuid_gate: impenv.Gate
) -> None:
    with impenv.gated_dir(setuid_gate, "fluximp-python-") as top:
        (top / "bin").mkdir(mode=0o755)
        (top / "real").mkdir()
        (top / "real").chmod(0o775)  # the target's directory is insecure
        real = top / "real" / "python3"
        shutil.copy(PYTHON, real)
        real.chmod(0o755)
        (top / "bin" / "python").symlink_to(real)
        exe = build(top / "flux-imp", python=str(top / "bin" / "python"), sitedir=site)
        refused(run(exe, user=guest), top / "real")


def test_missing_interpreter_fails_closed(
    guest: pwd.struct_passwd, site: Path, setuid_gate: impenv.Gate
) -> None:
    with impenv.gated_dir(setuid_gate, "fluximp-python-") as top:
        exe = build(top / "flux-imp", python=str(top / "nope"), sitedir=site)
        proc = run(exe, user=guest)
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert proc.stderr == f"flux-imp: Fatal: {top}/nope: No such file or directory\n".encode()


# ----------------------------------------------------------------- Makefile


@pytest.mark.parametrize(
    "bad",
    [
        ["PYTHON=python3", "SITEDIR=/x"],
        ["PYTHON=/usr/bin/python3", "SITEDIR=relative/site"],
        ["PYTHON=/usr/bin/python3", "SITEDIR="],
        ["PYTHON=/usr/bin/python3", 'SITEDIR=/x"];import os;#'],
        ["PYTHON=/usr/bin/python3", "SITEDIR=/x'y"],
        ["PYTHON=/usr/bin/python3", "SITEDIR=/x", "MODULE=os;os.system"],
        ["PYTHON=/usr/bin/python3", "SITEDIR=/x", "MODULE=a..b"],
        ["PYTHON=/usr/bin/python3", "SITEDIR=/x", "TEST_BUILD=2"],
        # The helper keeps its file's name as the job's parent: flux-imp only.
        ["PYTHON=/usr/bin/python3", "SITEDIR=/x", "PROXY=/usr/libexec/flux/flux-imp-proxy"],
        ["PYTHON=/usr/bin/python3", "SITEDIR=/x", "PROXY=/usr/libexec/flux-imp/xflux-imp"],
    ],
)
def test_make_rejects_unsafe_settings(bad: list[str], tmp_path: Path) -> None:
    _gcc()
    out = tmp_path / "flux-imp"
    made = run_make(*bad, f"OUT={out}")
    assert made.returncode != 0
    assert not out.exists()


def test_make_install_production_build(tmp_path: Path) -> None:
    _gcc()
    if os.geteuid() != 0:
        pytest.skip("install -o root needs root")
    out = tmp_path / "flux-imp"
    made = run_make(f"PYTHON={PYTHON}", f"SITEDIR={VENV_SITE}", f"OUT={out}")
    assert made.returncode == 0, made.stderr
    made = run_make(f"OUT={out}", "install", f"DESTDIR={tmp_path / 'dest'}")
    assert made.returncode == 0, made.stderr
    installed = tmp_path / "dest" / "usr" / "libexec" / "flux" / "flux-imp"
    st_ = installed.stat()
    assert (st_.st_uid, st_.st_gid, stat.S_IMODE(st_.st_mode)) == (0, 0, 0o4755)
    binary = installed.read_bytes()
    bootstrap = (  # the import guard is a module (tests/test_harden_launcher.py)
        "import sys\n"
        f'sys.path.append("{VENV_SITE}");\n'
        "from _frozen_importlib_external import spec_from_file_location\n"
        "from _frozen_importlib import _load\n"
        f'_load(spec_from_file_location("flux_imp.imp.guard", "{VENV_SITE}/flux_imp/imp/guard.py"))'
        f'.start("{VENV_SITE}")\n'
        'from flux_imp.imp.main import main;main(test_build=0,sysconfdir="/etc")'
    )
    assert b"\0" + bootstrap.encode() + b"\0" in binary
    assert b"test_pattern" not in binary
    readelf = shutil.which("readelf")
    if readelf is not None:
        dynamic = subprocess.run([readelf, "-d", str(installed)], capture_output=True, text=True)
        assert "BIND_NOW" in dynamic.stdout
        assert "PIE" in dynamic.stdout


def test_make_install_refuses_a_test_build(tmp_path: Path) -> None:
    _gcc()
    out = tmp_path / "flux-imp"
    made = run_make(f"PYTHON={PYTHON}", f"SITEDIR={VENV_SITE}", "TEST_BUILD=1", f"OUT={out}")
    assert made.returncode == 0, made.stderr
    made = run_make(f"OUT={out}", "install", f"DESTDIR={tmp_path / 'dest'}")
    assert made.returncode != 0
    assert "refusing to install a test build" in made.stderr
    assert not (tmp_path / "dest").exists()


def test_make_install_refuses_what_is_not_a_launcher(tmp_path: Path) -> None:
    out = tmp_path / "flux-imp"
    out.write_bytes(b"#!/bin/sh\n")
    made = run_make(f"OUT={out}", "install", f"DESTDIR={tmp_path / 'dest'}")
    assert made.returncode != 0
    assert "not a flux-imp launcher build" in made.stderr


def test_make_builds_into_a_new_directory_with_sysconfdir(tmp_path: Path) -> None:
    _gcc()
    out = tmp_path / "new" / "dir" / "flux-imp"
    made = run_make(f"PYTHON={PYTHON}", f"SITEDIR={VENV_SITE}", "SYSCONFDIR=/opt/site/etc",
                    f"OUT={out}")
    assert made.returncode == 0, made.stderr
    assert b'main(test_build=0,sysconfdir="/opt/site/etc")\0' in out.read_bytes()


@pytest.mark.parametrize("bad", ["relative/etc", "/etc/x\"y", "/etc x", ""])
def test_make_rejects_unsafe_sysconfdir(bad: str, tmp_path: Path) -> None:
    _gcc()
    out = tmp_path / "flux-imp"
    made = run_make(f"PYTHON={PYTHON}", f"SITEDIR={VENV_SITE}", f"SYSCONFDIR={bad}",
                    f"OUT={out}")
    assert made.returncode != 0
    assert not out.exists()


# ------------------------------------------------ launch data, in process


def blob(environ: Sequence[bytes], umask: int = 0o022, cwd: bytes = b"/home/a b") -> bytes:
    """Launch data exactly as the C launcher writes it."""
    head = b"flux-imp-launch 1\0umask=%04o\0cwd=%s\0envc=%d\0" % (umask, cwd, len(environ))
    return head + b"".join(entry + b"\0" for entry in environ)


@contextlib.contextmanager
def memfd(data: bytes) -> Iterator[int]:
    fd = os.memfd_create("test-launch", 0)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_read_launch_data_parses_and_closes_the_fd() -> None:
    environ = [b"A=1", "FLUX_JOB_ID=ƒ1".encode(), b"RAW=\xff", b"A=dup", b"no-equals", b""]
    with memfd(blob(environ, 0o027, "/srv/ƒ".encode() + b"\xff")) as fd:
        data = read_launch_data(fd)
        assert not _is_open(fd)
    assert data == launch.LaunchData(environ=environ, umask=0o027, via_launcher=True,
                                     cwd="/srv/ƒ\udcff")
    assert data.cwd == "/srv/ƒ\udcff"


def test_read_launch_data_with_unknown_cwd() -> None:
    with memfd(blob([b"A=1"], cwd=b"")) as fd:
        assert read_launch_data(fd) == launch.LaunchData([b"A=1"], 0o022, True, "")


def test_read_launch_data_without_launcher_describes_this_process() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)  # a number known to be closed
    data = read_launch_data(fd)
    assert data.via_launcher is False
    assert data.environ == [k + b"=" + v for k, v in os.environb.items()]
    mask = os.umask(0o022)
    os.umask(mask)
    assert data.umask == mask
    assert data.cwd == os.getcwd()


def test_read_launch_data_without_launcher_in_a_deleted_cwd(tmp_path: Path) -> None:
    here = os.open(".", os.O_PATH)
    gone = tmp_path / "gone"
    gone.mkdir()
    try:
        os.chdir(gone)
        gone.rmdir()
        fd = os.open("/dev/null", os.O_RDONLY)
        os.close(fd)
        assert read_launch_data(fd).cwd == ""
    finally:
        os.fchdir(here)
        os.close(here)


def test_read_launch_data_leaves_a_pipe_alone() -> None:
    read, write = os.pipe()
    try:
        os.write(write, blob([b"A=1"]))
        assert read_launch_data(read).via_launcher is False
        assert os.read(read, 100) == blob([b"A=1"])  # nothing consumed
    finally:
        os.close(read)
        os.close(write)


def test_read_launch_data_leaves_another_file_alone() -> None:
    with memfd(b"some other file\n") as fd:
        os.lseek(fd, 5, os.SEEK_SET)
        assert read_launch_data(fd).via_launcher is False
        assert _is_open(fd)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5


def test_read_launch_data_rejects_another_version() -> None:
    with memfd(blob([b"A=1"]).replace(b"launch 1", b"launch 2")) as fd:
        with pytest.raises(LaunchDataError, match="version"):
            read_launch_data(fd)
        assert not _is_open(fd)


def test_read_launch_data_rejects_every_truncation() -> None:
    full = blob([b"A=1", b"BB=22", b""], 0o077, b"/a/b")
    for size in range(len(b"flux-imp-launch"), len(full)):
        with memfd(full[:size]) as fd, pytest.raises(LaunchDataError):
            read_launch_data(fd)


def test_read_launch_data_rejects_oversize(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "_MAX_SIZE", 40)
    with memfd(blob([b"A=" + b"x" * 100])) as fd, pytest.raises(LaunchDataError, match="MiB"):
        read_launch_data(fd)


@pytest.mark.parametrize(
    "body",
    [
        b"umask=022\0cwd=/\0envc=0\0",
        b"umask=00022\0cwd=/\0envc=0\0",
        b"umask=0800\0cwd=/\0envc=0\0",
        b"umask=1000\0cwd=/\0envc=0\0",
        b"umask=0022 \0cwd=/\0envc=0\0",
        b"umask=0022\0cwd=/\0envc=01\0",
        b"umask=0022\0cwd=/\0envc=-1\0",
        b"umask=0022\0cwd=/\0envc=\0",
        b"umask=0022\0cwd=/\0envc=1\0",
        b"umask=0022\0cwd=/\0envc=0\0A=1\0",
        b"umask=0022\0cwd=/\0envc=2\0A=1\0",
        b"umask=0022\0envc=0\0",  # no cwd field (version 1 without it)
        b"umask=0022\0cwd=tmp\0envc=0\0",  # relative
        b"umask=0022\0cwd= /\0envc=0\0",
        b"umask=0022\0cwd\0envc=0\0",
        b"umask=0022\0CWD=/\0envc=0\0",
        b"umask=0022\0envc=0\0cwd=/\0",
        b"cwd=/\0umask=0022\0envc=0\0",
        b"envc=0\0umask=0022\0cwd=/\0",
        b"umask=0022\0cwd=/\0",
        b"umask=0022\0",
        b"",
    ],
)
def test_parse_launch_data_is_strict(body: bytes) -> None:
    with pytest.raises(LaunchDataError):
        parse_launch_data(launch.MAGIC + body)


@given(
    environ=st.lists(st.binary().map(lambda b: b.replace(b"\0", b""))),
    umask=st.integers(0, 0o777),
    cwd=st.one_of(st.just(b""), st.binary().map(lambda b: b"/" + b.replace(b"\0", b""))),
)
def test_parse_launch_data_round_trips(environ: list[bytes], umask: int, cwd: bytes) -> None:
    assert parse_launch_data(blob(environ, umask, cwd)) == (environ, umask, os.fsdecode(cwd))
