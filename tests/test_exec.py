"""``flux-imp exec`` (INTEROP.md 4.4, upstream t2000-imp-exec.t and the
options part of t2004-imp-exec-device.t), end to end through the setuid
test build as real users: the owner runs the IMP, the guest signs J.

Then the privileged half on its own (the privsep message is hostile
input), the audit records, and unit tests of the JSON reader and the
options parser.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import grp
import hashlib
import itertools
import json
import os
import pwd
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_imp.imp import audit, cgroup, devices, environ, helper, options, privsep
from flux_imp.imp.cgroup import CgroupInfo
from flux_imp.imp.impconfig import ImpConfig
from flux_imp.imp.log import ImpError
from flux_imp.imp.privileged import exec as imp_exec
from flux_imp.imp.privileged.contain import cgroup as jobcgroup
from flux_imp.imp.privileged.contain import pam
from flux_imp.imp.state import Imp
from flux_imp.imp.unprivileged import jsonin
from flux_imp.sign import DISABLE_PATH_PARANOIA
from flux_imp.sign.kv import KV

from . import impenv, users
from .impenv import ImpInstall
from .jobs import sign_as
from .syslogtrap import AUTHPRIV_NOTICE, AUTHPRIV_WARNING, SyslogTrap

SH = "/bin/sh"
HOST = socket.gethostname()
CONFIG = """\
allow-sudo = true
[exec]
allowed-users = {users}
allowed-shells = {shells}
{exec_extra}
[sign]
max-ttl = {max_ttl}
default-type = "{default}"
allowed-types = {types}
[sign.munge]
socket-path = "{socket}"
[sign.curve]
require-ca = false
"""
# What the happy-path shell reports about itself, one fact per line.
PROBE = ("id -u; id -g; id -G; grep -E '^Cap(Prm|Eff|Amb):' /proc/self/status | cut -f2; "
         "pwd; umask")
NO_CAPS = ["0000000000000000"] * 3
LOADER_ENV = {"LD_PRELOAD": "libc.so.6", "LD_LIBRARY_PATH": "/nonexistent",
              "LD_BIND_NOW": "1", "GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}
UTF8_VALUE = "ƒ-jöb ✓"


# ------------------------------------------------------------ set-up


@dataclass
class Setup:
    """An installed IMP, its users and a factory of configurations."""

    imp: ImpInstall
    owner: pwd.struct_passwd
    guest: pwd.struct_passwd
    munged: str
    tmp: Path
    _count: itertools.count[int] = field(default_factory=itertools.count)

    def config(self, *, users: tuple[str, ...] | None = None,
               shells: tuple[str, ...] = (SH,), default: str = "munge",
               types: tuple[str, ...] = ("munge", "none", "curve"), max_ttl: int = 30,
               exec_extra: str = "") -> str:
        """Write a config (IMP and signing, one file) and return its pattern."""
        text = CONFIG.format(
            users=json.dumps(users if users is not None else (self.owner.pw_name,)),
            shells=json.dumps(shells), exec_extra=exec_extra, max_ttl=max_ttl,
            default=default, types=json.dumps(types), socket=self.munged)
        return impenv.write_config(self.tmp / f"conf{next(self._count)}", text)

    def env(self, pattern: str, **extra: str) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern, **extra}

    def run(self, args: list[str], pattern: str, *, stdin: bytes = b"",
            as_user: Callable[[], None] | None = None, binary: Path | None = None,
            env: dict[str, str] | None = None, cwd: Path | str = "/", **more: str
            ) -> subprocess.CompletedProcess[bytes]:
        """``flux-imp exec ARGS`` (default: as the owner, setuid test build, in /)."""
        return impenv.run(binary or self.imp.test_build, ["exec", *args],
                          as_user=as_user or users.become(self.owner),
                          env=self.env(pattern, **(env or {}), **more), stdin=stdin, cwd=cwd)

    def script(self, name: str, text: str) -> str:
        """An executable file in the shared temp dir; its path."""
        path = self.tmp / name
        path.write_text(text)
        path.chmod(0o755)
        return str(path)


@pytest.fixture
def setup(imp: ImpInstall, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
          munged: str, world_tmp: Path) -> Setup:
    return Setup(imp, owner, guest, munged, world_tmp)


@pytest.fixture
def pattern(setup: Setup) -> str:
    """The default config: the owner may exec /bin/sh."""
    return setup.config()


def request(token: str, **extra: Any) -> bytes:
    return json.dumps({"J": token, **extra}).encode()


def fatal(message: str) -> bytes:
    return f"flux-imp: Fatal: {message}\n".encode()


def unknown_user(uid: int) -> pwd.struct_passwd:
    """A passwd-like entry for a uid that has none (skip if it does)."""
    with contextlib.suppress(KeyError):
        pwd.getpwuid(uid)
        pytest.skip(f"uid {uid} exists on this machine")
    return pwd.struct_passwd((f"uid{uid}", "x", uid, uid, "", "/", SH))


# ------------------------------------------- arguments and JSON input


@pytest.mark.parametrize("args", [[], ["foo"]], ids=["no-args", "one-arg"])
@pytest.mark.parametrize("via_helper", [False, True])
def test_missing_arguments(setup: Setup, pattern: str, args: list[str],
                           via_helper: bool) -> None:
    extra = {"FLUX_IMP_EXEC_HELPER": "cat"} if via_helper else {}
    result = setup.run(args, pattern, env=extra)
    assert (result.returncode, result.stderr) == (
        1, fatal("exec: missing arguments to exec subcommand"))


JSON_ERRORS = [
    (b"", "'[' or '{' expected near end of file"),
    (b"foo\n", "'[' or '{' expected near 'foo'"),
    (b"{}\n", "Object item not found: J"),
    (b"{\n", "string or '}' expected near end of file"),
    (b"[1]", "Expected object, got array"),
    (b'{"J":1}', "Expected string, got integer"),
    (b'{"J":"x"} {}', "end of file expected near '{'"),
    (b'{"J":"x"}\0', "end of file expected near end of file"),
    (b'{"J":"x","n":NaN}', "invalid token near 'NaN'"),
    (b'{"J":"x","n":-Infinity}', "invalid token near '-'"),
    (b'{"J":"x","n":9223372036854775808}', "too big integer near '9223372036854775808'"),
    (b'{"J":"\\u0000"}', "\\u0000 is not allowed without JSON_ALLOW_NUL near '\"\\u0000\"'"),
    (b'{"J":"\xff"}', "unable to decode byte 0xff near '\"'"),
    (b"\xef\xbb\xbf{}", "'[' or '{' expected near '\ufeff'"),
]


@pytest.mark.parametrize("data,text", JSON_ERRORS)
@pytest.mark.parametrize("via_helper", [False, True])
def test_invalid_json_input(setup: Setup, pattern: str, data: bytes, text: str,
                            via_helper: bool) -> None:
    extra = {"FLUX_IMP_EXEC_HELPER": "cat"} if via_helper else {}
    result = setup.run([SH, "-c", "echo ran"], pattern, stdin=data, env=extra)
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal(f"exec: invalid json input: {text}")


# ------------------------------------------------------------ the helper


def test_helper_empty(setup: Setup, pattern: str) -> None:
    result = setup.run([SH, "-c", "echo ran"], pattern, FLUX_IMP_EXEC_HELPER="")
    assert result.stderr == fatal("exec: FLUX_IMP_EXEC_HELPER is empty")


def test_helper_not_found(setup: Setup, pattern: str) -> None:
    result = setup.run([SH, "-c", "echo ran"], pattern, FLUX_IMP_EXEC_HELPER="nosuch-helper arg")
    assert result.returncode == 1
    assert result.stderr == (
        b"imp: popen: nosuch-helper: No such file or directory\n"
        + fatal("exec: invalid json input: '[' or '{' expected near end of file"))


def test_helper_failure_is_reported_after_j_is_verified(setup: Setup, pattern: str) -> None:
    token = sign_as(setup.guest, pattern)
    path = setup.script("helper.sh", f"#!/bin/sh\nprintf '%s' '{request(token).decode()}'\n"
                                     "exit 3\n")
    result = setup.run([SH, "-c", "echo ran"], pattern, FLUX_IMP_EXEC_HELPER=path)
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal(f"exec: helper {path} failed with status=0x0300")


def test_helper_invalid_output_and_path_search(setup: Setup, pattern: str) -> None:
    setup.script("my-helper", "#!/bin/sh\necho foo\n")  # found through the caller's PATH
    result = setup.run([SH, "-c", "echo ran"], pattern, FLUX_IMP_EXEC_HELPER="my-helper",
                       PATH=f"{setup.tmp}:/usr/bin:/bin")
    assert result.stderr == fatal("exec: invalid json input: '[' or '{' expected near 'foo'")


@pytest.mark.parametrize(("helper", "path"), [("./helper.sh", "/usr/bin:/bin"),
                                              ("helper.sh", "/usr/bin:.:/bin")],
                         ids=["relative-path", "relative-PATH-entry"])
def test_helper_runs_in_the_callers_cwd(setup: Setup, pattern: str, helper: str,
                                        path: str) -> None:
    """As upstream's, the helper starts in the caller's cwd (the shell in /)."""
    token = sign_as(setup.guest, pattern)
    setup.script("helper.sh", f"#!/bin/sh\nprintf '%s' '{request(token).decode()}'\n")
    result = setup.run([SH, "-c", "echo ran; pwd"], pattern, cwd=setup.tmp,
                       FLUX_IMP_EXEC_HELPER=helper, PATH=path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ran\n/\n"


def test_relative_config_pattern_is_read_from_the_callers_cwd(setup: Setup, pattern: str) -> None:
    """A test build reads both the IMP and the signing config (in parent and
    child) from the caller's cwd when the pattern is relative, as upstream."""
    token = sign_as(setup.guest, pattern)
    relative = os.path.relpath(pattern, setup.tmp)
    result = setup.run([SH, "-c", "echo ran"], relative, stdin=request(token), cwd=setup.tmp)
    assert (result.returncode, result.stdout) == (0, b"ran\n"), result.stderr
    result = setup.run([SH, "-c", "echo ran"], relative, stdin=request(token))
    assert result.returncode == 1
    assert result.stderr.endswith(fatal("Failed to load configuration"))  # not found in /


def test_helper_runs_as_the_caller_in_a_new_session_and_leaves_stdin_to_the_shell(
    setup: Setup, pattern: str
) -> None:
    token_file = setup.tmp / "request.json"
    token_file.write_bytes(request(sign_as(setup.guest, pattern)))
    # Split on tabs too; report to stderr what the helper is and sees.
    path = setup.script("helper.sh", '#!/bin/sh\ncat "$1"\n'
                        'echo "helper uid=$(id -u) sid=$(cut -d" " -f6 /proc/$$/stat)'
                        ' pid=$$ var=$HELPER_VAR" >&2\n')
    result = setup.run([SH, "-c", "id -u; cat"], pattern, stdin=b"for the shell\n",
                       FLUX_IMP_EXEC_HELPER=f"{path}\t {token_file}", HELPER_VAR="seen")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{setup.guest.pw_uid}\nfor the shell\n".encode()
    words = dict(w.split("=") for w in result.stderr.decode().split()[1:])
    assert words["uid"] == str(setup.owner.pw_uid)
    assert words["sid"] == words["pid"]  # setsid(): it leads its own session
    assert words["var"] == "seen"


def test_helper_and_shell_run_on_the_callers_cpus(setup: Setup, pattern: str) -> None:
    """The privsep child starts on another CPU than the parent's (a
    scheduling hint) and widens its mask back: what it runs, the helper,
    and the job shell get every CPU the caller had."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        pytest.skip("one CPU: the IMP moves no process, nothing to restore")
    token_file = setup.tmp / "request.json"
    token_file.write_bytes(request(sign_as(setup.guest, pattern)))
    mask = "grep Cpus_allowed_list: /proc/self/status"
    path = setup.script("helper.sh", f'#!/bin/sh\ncat "$1"\n{mask} >&2\n')
    result = setup.run([SH, "-c", mask], pattern, FLUX_IMP_EXEC_HELPER=f"{path} {token_file}")
    assert result.returncode == 0, result.stderr
    expected = f"Cpus_allowed_list:\t{_cpu_list(cpus)}\n".encode()
    assert (result.stderr, result.stdout) == (expected, expected)


def _cpu_list(cpus: set[int]) -> str:
    """``cpus`` as the kernel lists them: ranges, "0-3,6"."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and runs[-1][-1] == cpu - 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


# --------------------------------------------- caller, shell and J checks


def test_error_loading_security_context(setup: Setup, pattern: str) -> None:
    # Root (loading the IMP config) can read it; the unprivileged half cannot.
    conf = Path(pattern).parent / "imp.toml"
    conf.chmod(0o600)
    result = setup.run([SH, "-c", "echo ran"], pattern)
    assert result.stderr == fatal(
        f"exec: Error loading security context: {conf}::-1: Permission denied")


def test_caller_without_passwd_entry(setup: Setup, pattern: str) -> None:
    caller = unknown_user(4243)
    with setup.imp.gate.admitted(caller.pw_uid):  # the test builds' directory is closed to others
        result = setup.run([SH, "-c", "echo ran"], pattern, as_user=users.become(caller))
    assert result.stderr == fatal("exec: failed to find IMP user")


def test_user_not_in_allowed_users(setup: Setup) -> None:
    pattern = setup.config(users=("somebody-else",))
    result = setup.run([SH, "-c", "echo ran"], pattern, stdin=b"{}")
    assert result.stderr == fatal(f"exec: user {setup.owner.pw_name} not in allowed-users list")


def test_shell_not_in_allowed_shells(setup: Setup, pattern: str) -> None:
    token = sign_as(setup.guest, pattern)
    result = setup.run(["/bin/bash", "-c", "echo ran"], pattern, stdin=request(token))
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal("exec: shell not in allowed-shells")


def test_bad_j(setup: Setup, pattern: str) -> None:
    result = setup.run([SH, "-c", "echo ran"], pattern, stdin=request("x"))
    assert result.stderr == fatal(
        "exec: signature validation failed: sign-unwrap: header decode error: Invalid argument")


def test_expired_j(setup: Setup) -> None:
    pattern = setup.config(max_ttl=-100)
    result = setup.run([SH, "-c", "echo ran"], pattern,
                       stdin=request(sign_as(setup.guest, pattern)))
    assert result.stderr == fatal(
        "exec: signature validation failed: sign-munge-verify: max-ttl exceeded")


def test_mechanism_not_allowed(setup: Setup) -> None:
    token = sign_as(setup.owner, setup.config(default="none"))
    result = setup.run([SH, "-c", "echo ran"], setup.config(types=("munge",)),
                       stdin=request(token))
    assert result.stderr == fatal(
        "exec: signature validation failed: sign-unwrap: header mechanism=none not allowed")


def test_signer_without_passwd_entry(setup: Setup, pattern: str) -> None:
    token = sign_as(unknown_user(4242), pattern)
    result = setup.run([SH, "-c", "echo ran"], pattern, stdin=request(token))
    assert result.stderr == fatal(f"exec: userid 4242 is invalid on {HOST}")


def test_switching_to_root_is_refused(setup: Setup, pattern: str) -> None:
    token = sign_as(pwd.getpwuid(0), pattern)
    result = setup.run([SH, "-c", "echo ran"], pattern, stdin=request(token))
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal("exec: switching to user root not supported")


def test_no_config(setup: Setup) -> None:
    result = setup.run([SH, "-c", "echo ran"], str(setup.tmp / "nosuch" / "*.toml"))
    assert result.returncode == 1
    assert result.stderr.endswith(fatal("Failed to load configuration"))


def test_insecure_config_file(setup: Setup, pattern: str) -> None:
    conf = Path(pattern).parent / "imp.toml"
    conf.chmod(0o666)
    result = setup.run([SH, "-c", "echo ran"], pattern, FLUX_TEST_IMP_PATH_PARANOIA="1")
    assert result.returncode == 1
    assert str(conf).encode() in result.stderr
    assert result.stderr.endswith(fatal("Failed to load configuration"))


def test_pam_support_without_pam(setup: Setup) -> None:
    if pam.load() is not None:
        pytest.skip("libpam is installed (PAM sessions: test_containment_pam.py)")
    pattern = setup.config(exec_extra="pam-support = true")
    result = setup.run([SH, "-c", "echo ran"], pattern,
                       stdin=request(sign_as(setup.guest, pattern)))
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal(
        "exec: pam-support=true, but IMP was built without --enable-pam")


# ------------------------------------------------------------ modes


def test_unprivileged_exec_disabled_by_default(setup: Setup, pattern: str) -> None:
    token = sign_as(setup.owner, setup.config(default="none"))
    result = setup.run([SH, "-c", "echo ran"], pattern, stdin=request(token),
                       binary=setup.imp.unprivileged)
    assert result.stderr == fatal("exec: IMP not installed setuid, operation disabled.")


def test_unprivileged_exec_when_allowed(setup: Setup) -> None:
    pattern = setup.config(default="none", shells=(),  # not checked without privilege
                           exec_extra="allow-unprivileged-exec = true")
    result = setup.run(["/bin/echo", "good"], pattern,
                       stdin=request(sign_as(setup.owner, pattern)),
                       binary=setup.imp.unprivileged)
    assert (result.returncode, result.stdout) == (0, b"good\n")
    assert result.stderr == (
        b"flux-imp: Warning: Running without privilege, userid switching not available\n")


def test_sudo_mode_runs_the_shell_as_the_signer(setup: Setup) -> None:
    pattern = setup.config(default="none")
    result = setup.run([SH, "-c", "id -u"], pattern, stdin=request(sign_as(setup.owner, pattern)),
                       as_user=lambda: None, SUDO_USER=setup.owner.pw_name)
    assert (result.returncode, result.stdout) == (0, f"{setup.owner.pw_uid}\n".encode())


# --------------------------------------------------------- the job shell


def probe_lines(setup: Setup, user: pwd.struct_passwd, umask: str) -> list[str]:
    groups = sorted({user.pw_gid, *(os.getgrouplist(user.pw_name, user.pw_gid))})
    return [str(user.pw_uid), str(user.pw_gid), " ".join(map(str, groups)), *NO_CAPS,
            "/", umask]


def with_umask(user: pwd.struct_passwd, umask: int) -> Callable[[], None]:
    def preexec() -> None:
        os.umask(umask)
        users.become(user)()

    return preexec


def test_shell_runs_as_the_guest_with_nothing_else(setup: Setup, pattern: str) -> None:
    token = sign_as(setup.guest, pattern)
    result = setup.run([SH, "-c", PROBE], pattern, stdin=request(token),
                       as_user=with_umask(setup.owner, 0o027))
    assert (result.returncode, result.stderr) == (0, b"")
    lines = result.stdout.decode().splitlines()
    lines[2] = " ".join(sorted(lines[2].split(), key=int))
    assert lines == probe_lines(setup, setup.guest, "0027")


def test_shell_gets_the_guests_supplementary_groups(setup: Setup, pattern: str) -> None:
    """Those the plan lists (getgrouplist() when judged), set as they are."""
    group = f"fluximp-extra-{os.getpid()}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["usermod", "-aG", group, setup.guest.pw_name], check=True)
        token = sign_as(setup.guest, pattern)
        result = setup.run([SH, "-c", "id -G"], pattern, stdin=request(token))
        assert (result.returncode, result.stderr) == (0, b"")
        wanted = {setup.guest.pw_gid, grp.getgrnam(group).gr_gid}
        assert sorted(map(int, result.stdout.split())) == sorted(wanted)
    finally:
        subprocess.run(["gpasswd", "-d", setup.guest.pw_name, group], capture_output=True,
                       check=False)  # fmt: skip
        subprocess.run(["groupdel", group], check=True)


def test_curve_signed_j(setup: Setup) -> None:
    pattern = setup.config(default="curve")
    home = Path(setup.guest.pw_dir)
    as_guest = users.become(setup.guest)
    for sub in (home / ".flux", home / ".flux" / "curve"):
        sub.mkdir(exist_ok=True)
        os.chown(sub, setup.guest.pw_uid, setup.guest.pw_gid)
    for name in ("sig", "sig.pub"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(home / ".flux" / "curve" / name)
    keygen = subprocess.run([sys.executable, "-m", "flux_imp.sign",
                             "keygen", str(home / ".flux/curve/sig")],
                            preexec_fn=as_guest, capture_output=True, check=False,
                            cwd=impenv.TOP)
    assert keygen.returncode == 0, keygen.stderr
    result = setup.run([SH, "-c", "id -u"], pattern, stdin=request(sign_as(setup.guest, pattern)))
    assert (result.returncode, result.stdout) == (0, f"{setup.guest.pw_uid}\n".encode())


def test_shell_argv_is_passed_verbatim(setup: Setup, pattern: str) -> None:
    args = ["-c", 'printf "[%s]" "$0" "$@"', "zero", "a b", "", "*", "ü"]
    result = setup.run([SH, *args], pattern, stdin=request(sign_as(setup.guest, pattern)))
    assert result.stdout == "[zero][a b][][*][ü]".encode()


def test_message_too_big_for_the_privileged_half(setup: Setup, pattern: str) -> None:
    token = sign_as(setup.guest, pattern, b"x" * (privsep.MAX_KVLEN + 1))
    result = setup.run([SH, "-c", "echo ran"], pattern, stdin=request(token))
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal("exec: failed to communicate with privsep parent")


def test_shell_exit_code_is_the_imps(setup: Setup, pattern: str) -> None:
    result = setup.run([SH, "-c", "exit 7"], pattern, stdin=request(sign_as(setup.guest, pattern)))
    assert result.returncode == 7


@pytest.mark.parametrize("kind,code,error", [
    ("missing", 127, "No such file or directory"),
    ("not-executable", 126, "Permission denied"),
])  # fmt: skip
def test_shell_exec_failure(setup: Setup, kind: str, code: int, error: str) -> None:
    shell = str(setup.tmp / "nosuch-shell")
    if kind == "not-executable":
        setup.script("shell", "#!/bin/sh\n")
        shell = str(setup.tmp / "shell")
        os.chmod(shell, 0o644)
    pattern = setup.config(shells=(shell,))
    result = setup.run([shell, "x"], pattern, stdin=request(sign_as(setup.guest, pattern)))
    assert (result.returncode, result.stderr) == (code, fatal(f"{shell}: {error}"))


def test_shell_without_interpreter_line_runs_via_sh(setup: Setup) -> None:
    # glibc's execvp falls back to /bin/sh on ENOEXEC; upstream relies on execvp.
    shell = setup.script("plain-shell", 'echo "plain $1"\n')
    pattern = setup.config(shells=(shell,))
    result = setup.run([shell, "42"], pattern, stdin=request(sign_as(setup.guest, pattern)))
    assert (result.returncode, result.stdout) == (0, b"plain 42\n")


def _execvp_in_child(file: str, argv: list[str], environ: list[bytes]) -> tuple[int, bytes]:
    """helper.execvp() in a forked child: its exit status and stdout."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(write_end, 1)
        err = helper.execvp(file, argv, environ)
        os.write(2, f"{err.strerror}\n".encode())
        os._exit(helper.exec_failure_code(err))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out


@pytest.mark.parametrize("environ", [
    [b"B=2", b"A=1", b"C=x=y", b"D="],  # execve's mapping passes the same strings
    [b"A=1", b"A=2", b"NOEQUALS", b"=empty-name"],  # it cannot: glibc's execvp does
])  # fmt: skip
def test_execvp_passes_the_environment_verbatim_in_order(environ: list[bytes]) -> None:
    code, out = _execvp_in_child("/usr/bin/env", ["env", "-0"], environ)
    assert (code, out) == (0, b"".join(entry + b"\0" for entry in environ))


def test_execvp_of_a_path_keeps_glibcs_errors_and_sh_fallback(tmp_path: Path) -> None:
    assert _execvp_in_child(str(tmp_path / "missing"), ["x"], [b"A=1"])[0] == 127
    plain = tmp_path / "plain"
    plain.write_text('printf "%s" "plain $A"\n')
    plain.chmod(0o755)
    assert _execvp_in_child(str(plain), ["plain"], [b"A=1"]) == (0, b"plain 1")


def job_environment(setup: Setup, pattern: str, sudo: bool) -> dict[str, str]:
    env = {**LOADER_ENV, "TZ": "UTC", "FLUXIMP_UTF8": UTF8_VALUE}
    token = sign_as(setup.guest, pattern)
    if sudo:
        env["SUDO_USER"] = setup.owner.pw_name
    result = setup.run([SH, "-c", "env -0"], pattern, stdin=request(token),
                       as_user=(lambda: None) if sudo else None, env=env)
    assert result.returncode == 0, result.stderr
    return dict(e.split("=", 1) for e in result.stdout.decode().split("\0") if e)


@pytest.mark.parametrize("sudo", [False, True], ids=["setuid", "sudo"])
def test_loader_variables_do_not_reach_the_shell(setup: Setup, pattern: str, sudo: bool) -> None:
    env = job_environment(setup, pattern, sudo)
    assert not set(LOADER_ENV) & set(env)
    assert env["TZ"] == "UTC"
    assert env["FLUXIMP_UTF8"] == UTF8_VALUE
    assert env["FLUX_IMP_CONFIG_PATTERN"] == pattern


@pytest.mark.parametrize("sudo", [False, True], ids=["setuid", "sudo"])
def test_keep_loader_env(setup: Setup, sudo: bool) -> None:
    env = job_environment(setup, setup.config(exec_extra="keep-loader-env = true"), sudo)
    kept = {key: env.get(key) for key in LOADER_ENV}
    if sudo:  # glibc's secure mode removed nothing: neither do we
        assert kept == LOADER_ENV
    else:  # glibc removed its "unsecure" variables before we ran
        assert kept == {**LOADER_ENV, "LD_PRELOAD": None, "LD_LIBRARY_PATH": None}


# ------------------------------------------------------- device options

BAD_OPTIONS: list[Any] = [None, [], "auto", {"DevicePolicy": None}, {"DevicePolicy": 1},
               {"DevicePolicy": "bogus"}, {"DevicePolicy": "Auto"}, {"DeviceAllow": "x"},
               {"DeviceAllow": None}, {"DeviceAllow": [["/dev/null"]]},
               {"DeviceAllow": [[1, "r"]]}, {"DeviceAllow": ["/dev/null", "r"]},
               {"DevicePolicy": "strict", "DeviceAllow": [{"a": 1}]}]
CONTAINED: list[Any] = [{"DevicePolicy": "closed"}, {"DevicePolicy": "strict"},
             {"DevicePolicy": "strict", "DeviceAllow": []},
             {"DeviceAllow": [["/dev/null", "rw"]]},
             {"DevicePolicy": "closed", "DeviceAllow": [["char-pts", "rw", "extra"]]},
             {"DeviceAllow": [["/dev/null", "bogus-access"]]}]
NOT_CONTAINED: list[Any] = [{}, {"DevicePolicy": "auto"}, {"DeviceAllow": []},
                 {"DevicePolicy": "auto", "DeviceAllow": [], "Other": [1]}]


@pytest.mark.parametrize("opts", BAD_OPTIONS, ids=json.dumps)
def test_malformed_options(setup: Setup, pattern: str, opts: Any) -> None:
    result = setup.run([SH, "-c", "echo ran"], pattern,
                       stdin=request(sign_as(setup.guest, pattern), options=opts))
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal(
        "exec: failed to parse device containment policy: Invalid argument")


@pytest.mark.parametrize("opts", CONTAINED, ids=json.dumps)
def test_requested_device_containment_fails_closed(setup: Setup, pattern: str,
                                                   opts: Any) -> None:
    # Here the IMP runs in the tests' cgroup: only safe (refused) if that is
    # the root one.  Applied containment: test_containment_devices.py.
    here = cgroup.detect()
    if here is None or not here.unified or not jobcgroup.is_root(here.path):
        pytest.skip("the tests do not run in the root cgroup")
    result = setup.run([SH, "-c", "echo ran"], pattern,
                       stdin=request(sign_as(setup.guest, pattern), options=opts))
    assert (result.returncode, result.stdout) == (1, b"")
    *warnings, last = result.stderr.decode().splitlines()
    assert last == fatal("exec: failed to apply device containment policy: refusing to attach "
                         f"a device program to the root cgroup {here.path}").decode().rstrip()
    # The child resolved the entries: what it could not, it said (as upstream).
    assert all(line.startswith("flux-imp: Warning: device: ignore ") for line in warnings)


def test_too_many_device_entries(setup: Setup, pattern: str) -> None:
    opts = {"DeviceAllow": [["/dev/null", "r"]] * (devices.MAX_ENTRIES + 1)}
    result = setup.run([SH, "-c", "echo ran"], pattern,
                       stdin=request(sign_as(setup.guest, pattern), options=opts))
    assert result.stderr == fatal(
        "exec: failed to decode device containment policy: Numerical result out of range")


@pytest.mark.parametrize("opts", NOT_CONTAINED, ids=json.dumps)
def test_no_containment_requested_runs(setup: Setup, pattern: str, opts: Any) -> None:
    result = setup.run([SH, "-c", "echo ran"], pattern,
                       stdin=request(sign_as(setup.guest, pattern), options=opts))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ran\n", b"")


# -------------------------------------------------------- audit records

_QUOTED = r'"(?:[^"\\]|\\.)*"(?:\.\.\.)?'
_FIELD = re.compile(rf' (\w+)=({_QUOTED}|\[(?:{_QUOTED}|,|\.\.\.)*\]|-?[0-9]+)')


def exec_fields(text: str) -> dict[str, str]:
    """The fields of one ``exec`` record's text, which must parse whole;
    values stay as written (quoted)."""
    assert text.startswith("exec ")
    fields, pos = {}, len("exec")
    while pos < len(text):
        match = _FIELD.match(text, pos)
        assert match, text[pos:]
        fields[match[1]] = match[2]
        pos = match.end()
    return fields


def test_audit_record_of_an_allowed_exec(setup: Setup, pattern: str, syslog: SyslogTrap) -> None:
    token = sign_as(setup.guest, pattern)
    result = setup.run([SH, "-c", 'echo "$1"', 'x" outcome="forged\nline'], pattern,
                       stdin=request(token), as_user=syslog.preexec(users.become(setup.owner)))
    assert result.returncode == 0, result.stderr
    [(priority, text)] = syslog.records()  # of ident flux-imp
    assert "\n" not in text
    assert priority == AUTHPRIV_NOTICE
    assert exec_fields(text) == {
        "half": '"privileged"', "caller_uid": str(setup.owner.pw_uid),
        "caller": f'"{setup.owner.pw_name}"', "shell": f'"{SH}"',
        "args": '["-c","echo \\"$1\\"","x\\" outcome=\\"forged\\x0aline"]',
        "J_sha256": f'"{hashlib.sha256(token.encode()).hexdigest()}"',
        "mechanism": '"munge"', "target_uid": str(setup.guest.pw_uid),
        "target": f'"{setup.guest.pw_name}"', "outcome": '"allowed"',
    }


def test_audit_record_of_a_refusal_by_the_unprivileged_half(
    setup: Setup, syslog: SyslogTrap
) -> None:
    pattern = setup.config(users=())
    result = setup.run([SH, "-c", "echo ran"], pattern, stdin=b"{}",
                       as_user=syslog.preexec(users.become(setup.owner)))
    assert result.returncode == 1
    [(priority, text)] = syslog.records()
    assert priority == AUTHPRIV_WARNING
    fields = exec_fields(text)
    assert fields["half"] == '"unprivileged"'
    assert fields["outcome"] == (
        f'"refused: exec: user {setup.owner.pw_name} not in allowed-users list"')


def test_audit_record_of_a_refusal_by_the_privileged_half(
    setup: Setup, syslog: SyslogTrap
) -> None:
    pattern = setup.config(exec_extra='[exec.private-tmp]\nsize = "bad size"')
    token = sign_as(setup.guest, pattern)
    result = setup.run([SH, "-c", "echo ran"], pattern, stdin=request(token),
                       as_user=syslog.preexec(), SUDO_USER=setup.owner.pw_name)  # sudo mode
    assert result.returncode == 1
    [(_, text)] = syslog.records()
    fields = exec_fields(text)
    assert (fields["half"], fields["target"]) == ('"privileged"', f'"{setup.guest.pw_name}"')
    assert fields["outcome"] == '"refused: exec: private-tmp: invalid size"'


# ------------------------------------------- the privileged half alone


class FakePrivsep:
    def __init__(self, child_ok: bool) -> None:
        self.child_ok = child_ok

    def wait(self) -> bool:
        return self.child_ok


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Audit outcomes, captured instead of sent to syslog."""
    found: list[str] = []
    monkeypatch.setattr(audit, "record", lambda event, outcome, **_: found.append(outcome))
    return found


def privileged(pattern: str, child_ok: bool = True) -> Imp:
    """An Imp as the privileged parent sees it (run in-process, as root)."""
    conf = {"exec": {"allowed-users": ["root"], "allowed-shells": [SH]}}
    imp = Imp(["flux-imp", "exec"], environ.CallerEnv([]),
              ImpConfig(conf, pattern, DISABLE_PATH_PARANOIA),
              CgroupInfo("/sys/fs/cgroup", True, False), 0o022, True)
    imp.ps = FakePrivsep(child_ok)  # type: ignore[assignment]
    return imp


def message(token: str, shell: str = SH, args: tuple[str, ...] = (SH, "-c", "true"),
            extra: dict[str, str | int] | None = None) -> KV:
    kv = KV()
    kv.put_str("cmd", "exec")
    kv.put_str("J", token)
    kv.put_str("shell_path", shell)
    for i, arg in enumerate(args):
        kv.put_str(f"args{i}", arg)
    for key, value in (extra or {}).items():
        if isinstance(value, int):
            kv.put_int(key, value)
        else:
            kv.put_str(key, value)
    return kv


def refusal(imp: Imp, kv: KV) -> str:
    with pytest.raises(ImpError) as info:
        imp_exec.parent(imp, kv)
    return info.value.message


def test_parent_decodes_the_message_strictly(setup: Setup, pattern: str,
                                             decisions: list[str]) -> None:
    token = sign_as(setup.guest, pattern)
    imp = privileged(pattern)
    bad = KV()
    bad.put_str("shell_path", SH)
    assert refusal(imp, bad) == "exec: Error decoding J"
    bad.put_str("J", token)
    bad.delete("shell_path")
    assert refusal(imp, bad) == "exec: Failed to get job shell path"
    for args in [(SH,), ("/bin/bash", "x"), ()]:
        assert refusal(imp, message(token, args=args)) == "exec: Failed to get job shell arguments"
    gap = message(token)
    gap.delete("args1")
    assert refusal(imp, gap) == "exec: Failed to get job shell arguments"
    assert refusal(imp, message(token, extra={"extra": "x"})) == (
        "exec: unexpected data from privsep child")
    einval = "exec: failed to decode device containment policy: Invalid argument"
    closed: dict[str, str | int] = {"device.policy": "closed"}
    devices: list[dict[str, str | int]] = [
        {"device.count": 0}, {**closed, "device.count": "1"}, {**closed, "device.count": 1},
        closed]
    for device in devices:
        assert refusal(imp, message(token, extra=device)) == einval
    assert refusal(imp, message(token, extra={**closed, "device.count": 513})) == (
        "exec: failed to decode device containment policy: Numerical result out of range")
    assert len(decisions) == 12
    assert all(d.startswith("refused: exec: ") for d in decisions)


def test_parent_verifies_j_itself(setup: Setup, pattern: str, decisions: list[str]) -> None:
    imp = privileged(pattern)
    assert refusal(imp, message("x")) == (
        "exec: signature validation failed: sign-unwrap: header decode error: Invalid argument")
    token = sign_as(setup.guest, pattern)
    assert refusal(imp, message(token, "/bin/bash", ("/bin/bash", "x"))) == (
        "exec: shell not in allowed-shells list")
    assert refusal(imp, message(sign_as(pwd.getpwuid(0), pattern))) == (
        "exec: switching to user root not supported")
    imp.conf.table["exec"]["allowed-users"] = []
    assert refusal(imp, message(token)) == "exec: user root not in allowed-users list"
    assert decisions[-1] == "refused: exec: user root not in allowed-users list"


def test_parent_exits_silently_if_the_child_failed(setup: Setup, pattern: str,
                                                   decisions: list[str]) -> None:
    imp = privileged(pattern, child_ok=False)
    with pytest.raises(SystemExit) as info:
        imp_exec.parent(imp, message(sign_as(setup.guest, pattern)))
    assert info.value.code == 1
    assert decisions == ["refused: unprivileged half failed"]


# ------------------------------------------------ unit: the JSON reader


def jansson() -> Callable[[bytes], tuple[str, ...]] | None:
    """The real json_loadb + json_unpack_ex "{s:s s?o}", if libjansson is here."""
    name = ctypes.util.find_library("jansson")
    if name is None:
        return None
    lib = ctypes.CDLL(name)

    class Error(ctypes.Structure):
        _fields_ = [("line", ctypes.c_int), ("column", ctypes.c_int),
                    ("position", ctypes.c_int), ("source", ctypes.c_char * 80),
                    ("text", ctypes.c_char * 160)]

    lib.json_loadb.restype = ctypes.c_void_p
    lib.json_loadb.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t,
                               ctypes.POINTER(Error)]

    def load(data: bytes) -> tuple[str, ...]:
        err = Error()
        root = lib.json_loadb(data, len(data), 0, ctypes.byref(err))
        if not root:
            return ("error", err.text.decode("utf-8", "surrogateescape"))
        token, opts = ctypes.c_char_p(), ctypes.c_void_p()
        if lib.json_unpack_ex(ctypes.c_void_p(root), ctypes.byref(err), ctypes.c_size_t(0),
                              b"{s:s s?o}", b"J", ctypes.byref(token), b"options",
                              ctypes.byref(opts)) < 0:
            return ("error", err.text.decode())  # the root leaks: a test process
        kind = "absent"
        if opts.value:  # json_t starts with its type: the order of type_name's names
            kind = ["object", "array", "string", "integer", "real", "true", "false",
                    "null"][ctypes.c_int.from_address(opts.value).value]
        return ("ok", (token.value or b"").decode(), kind)

    return load


JANSSON = jansson()


def ours(data: bytes) -> tuple[str, ...]:
    try:
        got = jsonin.parse(data)
    except jsonin.JsonInputError as exc:
        return ("error", exc.text)
    kind = "absent" if got.options is jsonin.ABSENT else jsonin.type_name(got.options)
    return ("ok", got.J, kind)


JSON_CASES = [
    *((data, ("error", text)) for data, text in JSON_ERRORS),
    (b' \t\r\n{"J":"x"} \n', ("ok", "x", "absent")),
    (b'{"J":"a","J":"b","options":1,"options":null}', ("ok", "b", "null")),
    (b'{"J":"x","a":1\0}', ("ok", "x", "absent")),  # jansson loses a NUL after a number
    (b'{"J":"\\ud83d\\ude00 \\u00e9\\/"}', ("ok", "😀 é/", "absent")),
    (b'{"J":"\\ud800"}', ("error", "invalid Unicode '\\uD800' near '\"\\ud800\"'")),
    (b'{"J":"x","n":-9223372036854775809}', ("error", "too big negative integer near "
                                                      "'-9223372036854775809'")),
    (b'{"J":"x","n":1e400}', ("error", "real number overflow near '1e400'")),
    (b'{"J":"x","n":01}', ("error", "invalid token near '0'")),
    (b'{"J":"a\nb"}', ("error", "unexpected newline near '\"a'")),
    (b'{"\\u0000":1}', ("error", "NUL byte in object key not supported near '\"\\u0000\"'")),
    (b'{"J":"' + b"a" * 30 + b'\xff"}', ("error", "unable to decode byte 0xff")),
    (b"[" * 2048 + b"]" * 2048, ("error", "Expected object, got array")),
    (b"[" * 2049 + b"]" * 2049, ("error", "maximum parsing depth reached near '['")),
    (b'{"J":true}', ("error", "Expected string, got true")),
    (b'{"J":1.5}', ("error", "Expected string, got real")),
    # Runs of plain bytes are taken at once: what comes between and after them still counts.
    (b'{"J":"' + b"a" * 5000 + b'\\n\xc3\xa9b' + b"c" * 5000 + b'"}',
     ("ok", "a" * 5000 + "\n\u00e9b" + "c" * 5000, "absent")),
    (b'{"J":"ab\x01cd"}', ("error", "control character 0x1 near '\"ab'")),
    (b'{"J":"' + b"a" * 5000 + b'\x01"}', ("error", "control character 0x1")),
    (b'{"J":"' + b"a" * 5000 + b'\xc3"}', ("error", "unable to decode byte 0xc3")),
    (b'{"J":"' + b"a" * 5000, ("error", "premature end of input")),
]


@pytest.mark.parametrize("data,expected", JSON_CASES)
def test_jsonin_cases(data: bytes, expected: tuple[str, ...]) -> None:
    assert ours(data) == expected
    if JANSSON is not None:
        assert JANSSON(data) == expected


JSONISH = st.lists(st.sampled_from([
    b"{", b"}", b"[", b"]", b":", b",", b'"', b"\\", b"u", b"d83d", b"dc00", b"00", b'"J"',
    b'"options"', b"0", b"1", b"-", b".", b"e", b"+", b"true", b"nul", b"l", b" ", b"\n",
    b"\0", b"\xc3", b"\xa9", b"\xff", b"\xf0\x9f\x98\x80", b"x", b"\x01", b'{"J":"x",',
    b"9" * 19,
]), max_size=16).map(b"".join)  # fmt: skip


@given(st.one_of(st.binary(max_size=64), JSONISH))
@settings(max_examples=2000, deadline=None)
def test_jsonin_rejects_only_with_its_own_error_and_agrees_with_jansson(data: bytes) -> None:
    got = ours(data)  # any other exception fails the test
    if JANSSON is not None:
        assert got == JANSSON(data)


# ------------------------------------------- unit: options and audit text


@pytest.mark.parametrize("opts", BAD_OPTIONS, ids=json.dumps)
def test_options_invalid(opts: Any) -> None:
    with pytest.raises(options.OptionsError, match=r"^Invalid argument$"):
        options.from_options(opts)


def test_options_policies() -> None:
    assert options.from_options(jsonin.ABSENT) == options.NO_CONTAINMENT
    for opts in NOT_CONTAINED:
        assert not options.from_options(opts).contained
    closed = options.from_options({"DeviceAllow": [["/dev/a", "r", 1], ["char-x", "rw"]]})
    assert closed == options.DevicePolicy("auto", (("/dev/a", "r"), ("char-x", "rw")))
    assert closed.contained
    assert options.from_options({"DevicePolicy": "strict"}).contained


# What jsonin can produce: its strings never hold NUL (jansson refuses it)
# nor a lone surrogate (invalid Unicode, escaped or not).
JSON_TEXT = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["DevicePolicy", "DeviceAllow", "x"]) | JSON_TEXT, inner, max_size=4),
    max_leaves=12)


@given(st.one_of(JSON_VALUES, st.fixed_dictionaries(
    {}, optional={"DevicePolicy": st.sampled_from([*options.POLICIES, "x"]),
                  "DeviceAllow": st.lists(st.lists(JSON_TEXT, max_size=3), max_size=3)})))
@settings(deadline=None)
def test_options_resolve_and_round_trip_through_the_privsep_message(opts: Any) -> None:
    try:
        policy = options.from_options(opts)
    except options.OptionsError:
        return
    if not policy.contained:
        return
    resolved = devices.resolve(policy)  # what the child sends
    kv = KV()
    devices.encode(resolved, kv)
    assert devices.decode(KV.decode(kv.encode())) == resolved


@given(st.text())
def test_audit_values_are_one_printable_token(text: str) -> None:
    quoted = audit.quote(text)
    assert quoted.startswith('"') and quoted.isascii() and quoted.isprintable()
    body = quoted[1:].removesuffix('"...').removesuffix('"')
    unescaped = body.encode().decode("unicode_escape").encode("latin-1")
    assert unescaped.decode("utf-8", "surrogateescape") == text[:1024]


def test_helper_command_splits_on_spaces_and_tabs_only() -> None:
    assert helper.split_command(" a\t\tb  c\nd ") == ["a", "b", "c\nd"]
    assert helper.split_command(" \t ") == []


def test_loader_variable_names() -> None:
    names = [b"LD_PRELOAD", b"LD_ANYTHING", b"GLIBC_TUNABLES", b"TMPDIR", b"MALLOC_CHECK_"]
    assert all(imp_exec._is_loader_variable(n + b"=x") for n in names)
    assert not any(imp_exec._is_loader_variable(n + b"=x")
                   for n in [b"LANG", b"TZ", b"PATH", b"XLD_PRELOAD", b"ld_preload"])

