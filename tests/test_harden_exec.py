"""What the privileged IMP does with the caller's choices, and what the job
shell inherits (issue 9), end to end through the setuid test build: the
owner runs ``flux-imp exec``, the guest's job shell reports.

* NOTIFY_SOCKET is the caller's choice: the IMP reaches it only as the
  caller could.
* The job shell gets no descriptor above 2 (not even one a PAM module
  leaked), no controlling terminal (so no TIOCSTI into the caller's), and
  a session keyring of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import termios
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flux_imp.imp import creds
from flux_imp.imp.privileged.contain import pam

from . import users
from .containment_helpers import helper_input, make_setup, outcome, start
from .impenv import ImpInstall
from .jobs import SHELL, ExecSetup, finish, running, start_exec
from .test_proxy import NOTIFICATIONS, datagrams

PYTHON = "/usr/bin/python3"  # what the guest's job runs to report on itself


def python_job(code: str) -> list[str]:
    """Arguments of /bin/sh that make the job shell run ``code`` in Python."""
    if not os.access(PYTHON, os.X_OK):
        pytest.skip(f"{PYTHON} is needed for the job's report")
    return ["-c", f'exec {PYTHON} -c "$0"', code]


# -- NOTIFY_SOCKET: connected to with the caller's file-system ids -------------


@contextlib.contextmanager
def bound(path: Path, mode: int) -> Iterator[socket.socket]:
    """A datagram socket bound at ``path`` (root's), given ``mode``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        path.chmod(mode)
        yield sock


def notified(setup: ExecSetup, address: Path) -> str:
    """Run a job that exits 3 with NOTIFY_SOCKET=``address``; the IMP's stderr."""
    with running(start_exec(setup, ["-c", "exit 3"], env={"NOTIFY_SOCKET": str(address)})) as proc:
        code, err = finish(proc)
    assert code == 3
    return err


REFUSED = "".join(f"flux-imp: Warning: sd_notify {what}=1 failed: Permission denied\n"
                  for what in ("READY", "STOPPING"))  # fmt: skip


def test_notify_socket_the_owner_cannot_reach_gets_nothing(
    exec_setup: ExecSetup, world_tmp: Path
) -> None:
    """Upstream connects as root: the owner could make the IMP write to any
    socket on the host (here one in a directory only root may search)."""
    hidden = world_tmp / "hidden"
    hidden.mkdir()
    hidden.chmod(0o700)
    with bound(hidden / "notify", 0o777) as sock:
        assert notified(exec_setup, hidden / "notify") == REFUSED
        assert datagrams(sock) == []


def test_notify_socket_the_owner_may_not_write_gets_nothing(
    exec_setup: ExecSetup, world_tmp: Path
) -> None:
    with bound(world_tmp / "notify", 0o755) as sock:
        assert notified(exec_setup, world_tmp / "notify") == REFUSED
        assert datagrams(sock) == []


def test_notify_socket_the_owner_can_reach_gets_every_message(
    exec_setup: ExecSetup, world_tmp: Path
) -> None:
    with bound(world_tmp / "notify", 0o777) as sock:  # as systemd's /run/systemd/notify
        assert notified(exec_setup, world_tmp / "notify") == ""
        assert datagrams(sock) == NOTIFICATIONS


# -- no descriptor above 2 ---------------------------------------------------

LIST_FDS = "ls /proc/self/fd"  # 0, 1, 2 and the one ls lists with
ONLY_STDIO = "0\n1\n2\n3\n"

# A session module that, like some real ones, leaves a descriptor open in
# the process that opened the session, without close-on-exec.
LEAKY_MODULE = """\
#include <fcntl.h>
int pam_sm_open_session(void *pamh, int flags, int argc, const char **argv)
{ return open("/dev/null", O_RDONLY) < 0; }
int pam_sm_close_session(void *pamh, int flags, int argc, const char **argv)
{ return 0; }
"""


def test_job_shell_has_only_stdio(exec_setup: ExecSetup) -> None:
    with running(start_exec(exec_setup, ["-c", LIST_FDS])) as proc:
        out, err = proc.communicate(timeout=10)
    assert (proc.returncode, out.decode(), err) == (0, ONLY_STDIO, b"")


def test_job_shell_gets_no_descriptor_a_pam_module_leaked(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path,
) -> None:  # fmt: skip
    if pam.load() is None:
        pytest.skip("libpam.so.0 is not installed")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the test PAM module")
    (world_tmp / "leaky.c").write_text(LEAKY_MODULE)
    module = world_tmp / "pam_leaky.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(module), str(world_tmp / "leaky.c")],
                   check=True)  # fmt: skip
    (world_tmp / "pam.d").mkdir()
    (world_tmp / "pam.d" / "flux").write_text(
        f"auth required pam_localuser.so\nsession required {module}\n")
    setup = make_setup(imp.test_build, munged, owner, guest, world_tmp, "pam-support = true\n")
    result = outcome(start(setup, LIST_FDS, world_tmp,
                           binds={str(world_tmp / "pam.d"): "/etc/pam.d"}))  # fmt: skip
    assert result == (0, ONLY_STDIO, "")


# -- no controlling terminal -------------------------------------------------

TTY_REPORT = """\
import fcntl, os, termios
def tty_nr(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[4])
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"#")
    injected = 0
except OSError as exc:
    injected = exc.errno
print(tty_nr("self"), tty_nr(os.getppid()), injected, os.isatty(0))
"""


def caller_on_a_terminal(user: pwd.struct_passwd) -> Callable[[], None]:
    """A preexec_fn: a new session whose controlling tty is our stdin (a
    pty), then become ``user``."""
    become = users.become(user)

    def preexec() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        become()

    return preexec


def test_job_shell_has_no_controlling_terminal(exec_setup: ExecSetup, world_tmp: Path) -> None:
    """The caller's terminal is the job's stdin still, but no longer its
    controlling tty: the guest cannot push input into the owner's shell."""
    master, slave = os.openpty()
    try:
        env = {"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": exec_setup.pattern,
               **helper_input(exec_setup, world_tmp)}  # J through the helper: stdin is the tty
        proc = subprocess.Popen(
            [str(exec_setup.imp), "exec", SHELL, *python_job(TTY_REPORT)], stdin=slave,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd="/",
            preexec_fn=caller_on_a_terminal(exec_setup.owner))  # fmt: skip
        with running(proc):
            out, err = proc.communicate(timeout=10)
    finally:
        os.close(slave)
        os.close(master)
    assert (proc.returncode, err) == (0, b"")
    job_tty, imp_tty, injected, isatty = out.decode().split()
    assert imp_tty != "0"  # the IMP runs on the caller's terminal
    assert isatty == "True"
    assert (job_tty, injected) == ("0", str(1))  # EPERM: not its controlling tty


def test_job_shell_leads_a_session_of_its_own(exec_setup: ExecSetup) -> None:
    script = "echo $$ $PPID; cut -d' ' -f6 /proc/$$/stat"
    with running(start_exec(exec_setup, ["-c", script])) as proc:
        out, _ = proc.communicate(timeout=10)
    ids, session = out.decode().splitlines()
    shell, parent = map(int, ids.split())
    assert parent == proc.pid  # still the IMP's child (flux-shell's getppid() probe)
    assert int(session) == shell


# -- a session keyring of its own --------------------------------------------

KEYCTL_GET_KEYRING_ID, KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_DESCRIBE = 0, 1, 6
KEY_SPEC_SESSION_KEYRING = -3


def keyctl_number() -> int:
    number = creds.SYS_KEYCTL.get(os.uname().machine)
    if number is None:
        pytest.skip("keyctl syscall number unknown here")
    return number


KEYRING_REPORT = """\
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
serial = libc.syscall({nr}, {get}, {session}, 0)
buf = ctypes.create_string_buffer(256)
libc.syscall({nr}, {describe}, serial, buf, 256)
print(serial, buf.value.decode())
"""


def caller_with_a_keyring(user: pwd.struct_passwd, record: Path) -> Callable[[], None]:
    """A preexec_fn: become ``user``, join a new named session keyring and
    write its serial to ``record``."""
    become, number = users.become(user), keyctl_number()

    def preexec() -> None:
        become()
        libc = ctypes.CDLL(None, use_errno=True)
        name = f"fluximp-test-{secrets.token_hex(4)}".encode()
        serial = libc.syscall(number, KEYCTL_JOIN_SESSION_KEYRING, name)
        if serial < 0:
            raise OSError(ctypes.get_errno(), "keyctl join")
        record.write_text(str(serial))

    return preexec


def test_job_shell_gets_a_session_keyring_of_its_own(
    exec_setup: ExecSetup, world_tmp: Path
) -> None:
    """Upstream's job inherits the caller's session keyring, and so possesses
    (may read) the instance owner's keys."""
    record = world_tmp / "caller-keyring"
    record.write_text("")
    record.chmod(0o666)
    code = KEYRING_REPORT.format(nr=keyctl_number(), get=KEYCTL_GET_KEYRING_ID,
                                 session=KEY_SPEC_SESSION_KEYRING, describe=KEYCTL_DESCRIBE)
    proc = start_exec(exec_setup, python_job(code),
                      preexec=caller_with_a_keyring(exec_setup.owner, record))
    with running(proc):
        out, err = proc.communicate(timeout=10)
    assert (proc.returncode, err) == (0, b"")
    serial, description = out.decode().split()
    caller = int(record.read_text())
    assert caller > 0 and int(serial) > 0
    assert int(serial) != caller
    guest = exec_setup.guest
    # A new anonymous session keyring, the guest's: "keyring;uid;gid;perm;_ses".
    kind, uid, gid, _, name = description.split(";")
    assert (kind, int(uid), int(gid), name) == ("keyring", guest.pw_uid, guest.pw_gid, "_ses")



def test_job_shell_keeps_the_keyring_of_its_pam_session(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path,
) -> None:  # fmt: skip
    """The keyring is made before the PAM session opens: what session
    modules put there (pam_keyinit, a Kerberos keyring cache) reaches the job."""
    if pam.load() is None:
        pytest.skip("libpam.so.0 is not installed")
    report = KEYRING_REPORT.format(nr=keyctl_number(), get=KEYCTL_GET_KEYRING_ID,
                                   session=KEY_SPEC_SESSION_KEYRING, describe=KEYCTL_DESCRIBE)
    seen = world_tmp / "pam-keyring"
    hook, probe = world_tmp / "pam-hook", world_tmp / "probe.py"
    hook.write_text(f"#!{PYTHON}\nimport os\nif os.environ.get('PAM_TYPE') == 'open_session':\n"
                    f"    open({str(seen)!r}, 'w').write(''.join(os.popen('{PYTHON} {probe}')))\n")
    probe.write_text(report)
    hook.chmod(0o755)
    probe.chmod(0o644)
    (world_tmp / "pam.d").mkdir()
    (world_tmp / "pam.d" / "flux").write_text(
        f"auth required pam_localuser.so\nsession required pam_exec.so {hook}\n")
    setup = make_setup(imp.test_build, munged, owner, guest, world_tmp, "pam-support = true\n")
    code, out, err = outcome(start(setup, f"exec {PYTHON} {probe}", world_tmp,
                                   binds={str(world_tmp / "pam.d"): "/etc/pam.d"}))  # fmt: skip
    assert (code, err) == (0, "")
    assert out == seen.read_text()  # the same keyring: serial and description
    assert out.split()[1].split(";")[1] == str(guest.pw_uid)
