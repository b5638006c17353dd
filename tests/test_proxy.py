"""The lingering IMP after ``exec`` forks the job shell (upstream
t2000-imp-exec.t signal cases, §4.4 "parent after fork", §4.6, §4.7),
end to end through the setuid test build, as real users.

The owner runs ``flux-imp exec /bin/sh -c SCRIPT`` with a J the guest
signed with munge.  Scripts that linger print ``<pid> ...`` on stdout when
ready, so tests never sleep to guess.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import resource
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flux_imp.imp import linger, sdnotify

from . import users
from .impenv import ImpInstall
from .jobs import (
    ESCAPER,
    SLEEPER,
    TIMEOUT,
    ExecSetup,
    alive,
    exits,
    finish,
    in_cgroup,
    ready_line,
    running,
    start_exec,
)
from .test_run import make_setup

# -- fixtures and local helpers --------------------------------------------


def status_ids(pid: int, key: str) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith(f"{key}:"))
    return [int(word) for word in line.split()[1:]]


def no_core(user: pwd.struct_passwd) -> Callable[[], None]:
    """A preexec_fn: no core files from a crashing shell, then become ``user``."""
    become = users.become(user)

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        become()

    return preexec


@pytest.fixture
def notify_socket(world_tmp: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket and its NOTIFY_SOCKET value (a path), which
    every user may write, as systemd's: the IMP connects as the caller."""
    path = world_tmp / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        path.chmod(0o777)
        yield str(path), sock


def datagrams(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    found = []
    with contextlib.suppress(BlockingIOError):
        while True:
            found.append(sock.recv(4096).decode())
    return found


# -- exit status propagation -----------------------------------------------


def test_exit_code_of_the_shell_is_the_imps(exec_setup: ExecSetup) -> None:
    with running(start_exec(exec_setup, ["-c", "exit 3"])) as proc:
        assert finish(proc) == (3, "")


def test_shell_is_a_child_of_the_lingering_privileged_imp(exec_setup: ExecSetup) -> None:
    # flux-shell probes kill(getppid(), 0) to learn that it runs under the IMP.
    with running(start_exec(exec_setup, ["-c", SLEEPER])) as proc:
        shell, parent = ready_line(proc)
        assert parent == proc.pid
        assert Path(f"/proc/{parent}/comm").read_text() == "flux-imp\n"
        assert status_ids(parent, "Uid")[:2] == [exec_setup.owner.pw_uid, 0]
        assert status_ids(shell, "Uid") == [exec_setup.guest.pw_uid] * 4
        os.kill(proc.pid, signal.SIGTERM)
        assert finish(proc)[0] == -signal.SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM])
def test_forwarded_signal_kills_the_shell_and_the_imp_dies_of_it(
    exec_setup: ExecSetup, sig: signal.Signals
) -> None:
    with running(start_exec(exec_setup, ["-c", SLEEPER])) as proc:
        shell, _ = ready_line(proc)
        os.kill(proc.pid, sig)
        assert finish(proc) == (-sig, "")  # a shell waiting on the IMP sees 128+sig
        assert not alive(shell)


def test_sigusr1_sigkills_the_shell(exec_setup: ExecSetup) -> None:
    with running(start_exec(exec_setup, ["-c", SLEEPER])) as proc:
        shell, _ = ready_line(proc)
        os.kill(proc.pid, signal.SIGUSR1)
        assert finish(proc) == (-signal.SIGKILL, "")
        assert not alive(shell)


def test_shell_killed_by_an_unforwarded_signal_does_not_hang_the_imp(
    exec_setup: ExecSetup, notify_socket: tuple[str, socket.socket]
) -> None:
    # Upstream leaves SIGSEGV blocked and pauses until some forwarded signal.
    address, sock = notify_socket
    proc = start_exec(exec_setup, ["-c", "kill -SEGV $$"], env={"NOTIFY_SOCKET": address},
                      preexec=no_core(exec_setup.owner))
    with running(proc):
        assert finish(proc) == (-signal.SIGSEGV, "")
    assert "STATUS=IMP child Segmentation fault, waiting for cgroup" in datagrams(sock)


# -- cgroup-kill mode ------------------------------------------------------


def test_sigusr1_sigkills_everything_in_the_cgroup(
    exec_setup: ExecSetup, job_cgroup: Path
) -> None:
    proc = start_exec(exec_setup, ["-c", ESCAPER], preexec=in_cgroup(job_cgroup, exec_setup.owner))
    with running(proc):
        shell, grandchild = ready_line(proc)
        os.kill(proc.pid, signal.SIGUSR1)
        assert finish(proc) == (-signal.SIGKILL, "")
    assert not alive(shell)
    assert not alive(grandchild)
    assert (job_cgroup / "cgroup.procs").read_text() == ""


def test_imp_waits_for_the_cgroup_to_empty(exec_setup: ExecSetup, job_cgroup: Path) -> None:
    proc = start_exec(exec_setup, ["-c", ESCAPER], preexec=in_cgroup(job_cgroup, exec_setup.owner))
    with running(proc):
        shell, grandchild = ready_line(proc)
        os.kill(proc.pid, signal.SIGTERM)  # the shell dies, its grandchild lingers
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.3)
        assert not alive(shell)
        assert alive(grandchild)
        os.kill(proc.pid, signal.SIGUSR1)  # still handled while waiting for the cgroup
        assert finish(proc) == (-signal.SIGTERM, "")
    assert not alive(grandchild)
    assert (job_cgroup / "cgroup.procs").read_text() == ""


# -- no signal for a recycled pid ------------------------------------------

# The job's main process exits at once; its grandchild holds the cgroup.
LEAVER = "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $$ $!"


def state(pid: int) -> str | None:
    """The state letter of ``pid`` (Z: a zombie), None once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def await_datagram(sock: socket.socket, text: str) -> None:
    """Wait for the IMP's ``text`` notification (STOPPING=1: it saw the child exit)."""
    sock.settimeout(TIMEOUT)
    while sock.recv(4096).decode() != text:
        pass


@contextlib.contextmanager
def occupying(pid: int) -> Iterator[subprocess.Popen[bytes] | None]:
    """A new process group leader whose pid is ``pid``, if that pid is free
    (ns_last_pid makes it the next one given out); None if it is not."""
    last = Path("/proc/sys/kernel/ns_last_pid")
    found = None
    for _ in range(50):  # some other fork may take it first
        try:
            last.write_text(str(pid - 1))
        except OSError:  # not in the initial pid namespace
            break
        proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        if proc.pid == pid:
            found = proc
            break
        proc.kill()
        proc.wait()
    try:
        yield found
    finally:
        if found is not None:
            found.kill()
            found.wait()


def test_exec_shell_stays_unreaped_until_the_cgroup_is_empty(
    exec_setup: ExecSetup, job_cgroup: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    # A zombie keeps its pid: nothing the IMP still signals can be another's.
    address, sock = notify_socket
    proc = start_exec(exec_setup, ["-c", LEAVER], env={"NOTIFY_SOCKET": address},
                      preexec=in_cgroup(job_cgroup, exec_setup.owner))
    with running(proc):
        shell, grandchild = ready_line(proc)
        await_datagram(sock, "STOPPING=1")
        assert state(shell) == "Z"
        os.kill(proc.pid, signal.SIGUSR1)  # empties the cgroup
        assert finish(proc) == (0, "")
    assert state(shell) is None
    assert exits(grandchild)


def test_run_never_signals_a_recycled_process_group(
    imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path, job_cgroup: Path,
    notify_socket: tuple[str, socket.socket],
) -> None:  # fmt: skip
    # run forwards to -pgid after its command exits, and SIGUSR1 SIGKILLs
    # it: were the command reaped, its pid could lead a new group by then.
    setup = make_setup(imp, owner, world_tmp, sudo=False)
    (setup.bin / "sleep.sh").write_text(f"#!/bin/sh\n{LEAVER}\n")
    address, sock = notify_socket
    proc = subprocess.Popen(setup.argv("sleep"), env=setup.env({"NOTIFY_SOCKET": address}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
                            preexec_fn=in_cgroup(job_cgroup, owner))  # fmt: skip
    with running(proc):
        command, grandchild = ready_line(proc)
        await_datagram(sock, "STOPPING=1")
        with occupying(command) as impostor:
            for sig in (signal.SIGTERM, signal.SIGUSR1):  # forwarded, then the kill
                os.kill(proc.pid, sig)
            assert finish(proc) == (0, "")
            if impostor is not None:
                assert impostor.poll() is None, "the IMP signalled a group not the job's"
        assert impostor is None  # the command's pid stayed taken
    assert state(command) is None
    assert exits(grandchild)


# -- systemd notification --------------------------------------------------

NOTIFICATIONS = [
    "READY=1",
    "STATUS=IMP is monitoring child and forwarding signals",
    "STOPPING=1",
    "STATUS=IMP child exited (3), waiting for cgroup",
    "STATUS=cgroup is now empty, exiting",
]


def test_sd_notify_datagrams(
    exec_setup: ExecSetup, notify_socket: tuple[str, socket.socket]
) -> None:
    address, sock = notify_socket
    with running(start_exec(exec_setup, ["-c", "exit 3"], env={"NOTIFY_SOCKET": address})) as proc:
        assert finish(proc) == (3, "")
    assert datagrams(sock) == NOTIFICATIONS


def test_sd_notify_abstract_socket(exec_setup: ExecSetup) -> None:
    name = f"fluximp-test-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(f"\0{name}")
        proc = start_exec(exec_setup, ["-c", "exit 3"], env={"NOTIFY_SOCKET": f"@{name}"})
        with running(proc):
            assert finish(proc) == (3, "")
        assert datagrams(sock) == NOTIFICATIONS


def test_sd_notify_failure_is_a_warning(exec_setup: ExecSetup, world_tmp: Path) -> None:
    env = {"NOTIFY_SOCKET": str(world_tmp / "missing")}
    with running(start_exec(exec_setup, ["-c", "exit 3"], env=env)) as proc:
        assert finish(proc) == (3, "".join(
            f"flux-imp: Warning: sd_notify {what}=1 failed: No such file or directory\n"
            for what in ("READY", "STOPPING")))


# -- the library, without the launcher --------------------------------------

# spawn_and_proxy() reads only cgroup, env and umask from its Imp.
_RUN_GROUP = """\
import os, sys, types
from flux_imp.imp.cgroup import CgroupInfo
from flux_imp.imp.environ import CallerEnv
from flux_imp.imp.proxy import spawn_and_proxy
imp = types.SimpleNamespace(cgroup=CgroupInfo("/nonexistent", True, False),
                            env=CallerEnv([]), umask=0o022)
spawn_and_proxy(imp, lambda: os.execv("/bin/sh", ["/bin/sh", "-c", sys.argv[1]]),
                signal_group=True)
"""


@pytest.mark.parametrize(("sig", "status"), [
    (signal.SIGTERM, -signal.SIGTERM),
    (signal.SIGUSR1, -signal.SIGKILL),  # outside cgroup-kill mode: SIGKILL to the group
], ids=["SIGTERM", "SIGUSR1"])  # fmt: skip
def test_signal_group_forwards_to_the_whole_process_group(
    sig: signal.Signals, status: int
) -> None:
    script = "sleep 1000 & echo $$ $!; wait"
    proc = subprocess.Popen([sys.executable, "-c", _RUN_GROUP, script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with running(proc):
        shell, background = ready_line(proc)
        assert os.getpgid(shell) == shell == os.getpgid(background)
        os.kill(proc.pid, sig)
        assert finish(proc) == (status, "")
    assert exits(background)  # not the IMP's child: it may still be dying


_LINGER_GC = """\
import gc, os, types
from flux_imp.imp.cgroup import CgroupInfo
from flux_imp.imp.environ import CallerEnv
from flux_imp.imp.proxy import spawn_and_proxy
gc.disable()  # as flux_imp.imp.main does
imp = types.SimpleNamespace(cgroup=CgroupInfo("/nonexistent", False, False),
                            env=CallerEnv([]), umask=0o022)
spawn_and_proxy(imp, lambda: os.execv("/bin/true", ["/bin/true"]),
                finish=lambda: print("gc enabled:", gc.isenabled(), flush=True))
"""


def test_a_lingering_python_parent_collects_garbage_again() -> None:
    """The IMP runs without cyclic GC; Python lingering for a job (no
    helper here) turns it back on, for as long as the job runs."""
    proc = subprocess.run([sys.executable, "-c", _LINGER_GC], capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "gc enabled: True\n", "")


def test_children_found_by_scanning_proc() -> None:
    # The fallback for kernels without /proc/PID/task/TID/children.
    with subprocess.Popen(["sleep", "1000"]) as child:
        try:
            assert child.pid in linger.scan_children(os.getpid())
        finally:
            child.kill()


@pytest.mark.parametrize(("value", "code"), [
    ("relative", errno.EAFNOSUPPORT), ("/" + "x" * 107, errno.E2BIG),
])  # fmt: skip
def test_sd_notify_rejects_bad_addresses_like_upstream(value: str, code: int) -> None:
    with pytest.raises(OSError) as info:
        sdnotify.notify(value, "READY=1")
    assert info.value.errno == code
    assert not sdnotify.sd_notify(value, "READY=1")


def test_sd_notify_without_socket_is_a_no_op() -> None:
    assert sdnotify.sd_notify(None, "READY=1")
