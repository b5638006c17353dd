"""Running jobs through the real IMP, shared by the exec, run and proxy
tests, the containment tests and bench/bench_imp.py: an ``exec`` set-up
(owner runs the IMP, guest signs J with munge), starting and cleaning up
lingering IMPs, and watching the processes they leave.

Scripts that linger print numbers (pids) on stdout when ready, so tests
read them (ready_line) instead of sleeping to guess.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flux_imp.sign import DISABLE_PATH_PARANOIA, Context, wrap

from . import impenv, users
from .signconf import sign_table

SHELL = "/bin/sh"
TIMEOUT = 10.0
# A format string (fields: socket, owner, shells).
CONFIG = sign_table("munge") + """\
[sign.munge]
socket-path = "{socket}"
[exec]
allowed-users = ["{owner}"]
allowed-shells = {shells}
"""
# Prints "<shell pid> <its parent>" then becomes a sleep the IMP must end.
SLEEPER = "echo $$ $PPID; exec sleep 1000"
# A grandchild in its own session (out of reach of the shell's group), then wait.
ESCAPER = "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $$ $!; wait"


# -- exec: set-up and start ----------------------------------------------------


@dataclass(frozen=True)
class ExecSetup:
    imp: Path  # the setuid launcher to run
    pattern: str  # config glob: IMP and signing configuration
    owner: pwd.struct_passwd
    guest: pwd.struct_passwd


def write_exec_config(
    directory: Path, munge_socket: str, owner: pwd.struct_passwd, shells: tuple[str, ...] = (SHELL,)
) -> str:
    """The config glob of an IMP that lets ``owner`` exec ``shells`` for munge-signed J."""
    text = CONFIG.format(socket=munge_socket, owner=owner.pw_name, shells=json.dumps(shells))
    return impenv.write_config(directory, text)


def sign_as(user: pwd.struct_passwd, pattern: str, payload: bytes = b"{}") -> str:
    """J signed by ``user`` (in a forked child that becomes ``user``)."""

    def sign() -> bytes:
        ctx = Context(DISABLE_PATH_PARANOIA)
        ctx.configure(pattern)
        return wrap(ctx, payload).encode()

    return users.output_as(users.become(user), sign).decode()


def start_exec(
    setup: ExecSetup,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    preexec: Callable[[], None] | None = None,
    stdout: int | None = subprocess.PIPE,
    shell: str = SHELL,
    token: str | None = None,
) -> subprocess.Popen[bytes]:
    """``flux-imp exec SHELL ARGS...`` as the owner, J (default: fresh) on stdin."""
    data = json.dumps({"J": token or sign_as(setup.guest, setup.pattern)}).encode()
    rfd, wfd = os.pipe()
    os.write(wfd, data)
    os.close(wfd)
    try:
        return subprocess.Popen(
            [str(setup.imp), "exec", shell, *args], stdin=rfd, stdout=stdout,
            stderr=subprocess.PIPE, cwd="/", preexec_fn=preexec or users.become(setup.owner),
            env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": setup.pattern,
                 **(env or {})},
        )  # fmt: skip
    finally:
        os.close(rfd)


# -- a lingering IMP -----------------------------------------------------------


@contextlib.contextmanager
def running(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Make sure a failed test leaves no IMP or job shell behind."""
    with proc:  # closes the pipes and reaps
        try:
            yield proc
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGUSR1)  # SIGKILLs the IMP's children
                try:
                    proc.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()


def ready_line(proc: subprocess.Popen[bytes]) -> list[int]:
    """The numbers the script prints once it is running."""
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
    assert readable, "the job shell never started"
    line = proc.stdout.readline()
    assert line, proc.communicate()[1]
    return [int(word) for word in line.split()]


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """The IMP's exit status (negative: killed by that signal) and stderr."""
    _, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, err.decode()


def alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def exits(pid: int) -> bool:
    """True once ``pid`` is gone (within TIMEOUT): a process the IMP does not
    wait for (not its child) may still be dying when the IMP exits."""
    deadline = time.monotonic() + TIMEOUT
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- cgroups -------------------------------------------------------------------


def cgroup2_mount() -> Path | None:
    """Where the IMP looks for cgroup2: /sys/fs/cgroup, else .../unified."""
    with open("/proc/self/mounts") as f:
        mounts = {fields[1] for fields in map(str.split, f) if fields[2] == "cgroup2"}
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if path in mounts:
            return Path(path)
    return None


@contextlib.contextmanager
def child_cgroup(prefix: str) -> Iterator[Path]:
    """A fresh cgroup ``<prefix><random>`` right under the cgroup2 root (skips
    the test if there is none); after, everything in and below it is
    SIGKILLed and removed."""
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 mount")
    path = mount / f"{prefix}{secrets.token_hex(4)}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup: {exc}")
    try:
        yield path
    finally:
        remove_cgroup(path)


def remove_cgroup(path: Path) -> None:
    """SIGKILL everything in ``path`` (a test's own cgroup, never a mount's
    root) and below, then remove them all; within TIMEOUT."""
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        remove_cgroup(child)
    deadline = time.monotonic() + TIMEOUT
    while (pids := (path / "cgroup.procs").read_text().split()) and (
        time.monotonic() < deadline
    ):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.01)
    while True:
        try:
            path.rmdir()
            return
        except OSError:  # busy while the killed are still exiting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def in_cgroup(cgroup: Path, user: pwd.struct_passwd) -> Callable[[], None]:
    """A preexec_fn: move into ``cgroup``, then become ``user``."""
    become = users.become(user)

    def preexec() -> None:
        (cgroup / "cgroup.procs").write_text("0")  # "0": the writing process
        become()

    return preexec
