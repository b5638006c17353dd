"""The audit capture of syslogtrap.py itself: whatever the host's /dev/log
is, records reach our socket (datagram or stream), not the host's logger;
NoSyslog leaves none at all and binds /var/log; and the host's mounts and
/dev are left as they were."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .syslogtrap import (
    AUTHPRIV_NOTICE,
    MS_BIND,
    SyslogTrap,
    mount,
    no_syslog,
    private_dev,
    private_mounts,
    syslog_trap,
)

LOG = ("import syslog; syslog.openlog('flux-imp', syslog.LOG_PID, syslog.LOG_AUTHPRIV); "
       "syslog.syslog(syslog.LOG_NOTICE, 'probe')")  # fmt: skip


@pytest.fixture
def decoy(world_tmp: Path) -> Iterator[socket.socket]:
    """The host's syslog daemon, as far as these tests go."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(world_tmp / "decoy.sock"))
        sock.setblocking(False)
        yield sock


def received(sock: socket.socket) -> list[bytes]:
    found = []
    with contextlib.suppress(BlockingIOError):
        while True:
            found.append(sock.recv(1 << 16))
    return found


def host_with(kind: str, tmp: Path) -> Callable[[], None]:
    """A preexec_fn: a namespace of its own whose /dev/log is ``kind``:
    absent, the decoy's socket, a link to it, or a dangling link."""
    scratch = tmp / "host"
    scratch.mkdir()

    def preexec() -> None:
        private_mounts()
        private_dev(scratch)
        with contextlib.suppress(FileNotFoundError):
            os.unlink("/dev/log")
        if kind == "socket":
            Path("/dev/log").touch()
            mount(str(tmp / "decoy.sock"), "/dev/log", None, MS_BIND)
        elif kind != "absent":
            os.symlink(tmp / ("decoy.sock" if kind == "link" else "nowhere"), "/dev/log")

    return preexec


def log(*preexecs: Callable[[], None]) -> None:
    """syslog(3) a record (ident flux-imp) from a child that ran ``preexecs``."""

    def preexec() -> None:
        for function in preexecs:
            function()

    result = subprocess.run([sys.executable, "-I", "-c", LOG], preexec_fn=preexec,
                            capture_output=True, check=False)  # fmt: skip
    assert (result.returncode, result.stderr) == (0, b"")


def mounts() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


@pytest.mark.parametrize("kind", ["absent", "socket", "link", "dangling-link"])
def test_records_reach_the_trap_whatever_the_hosts_dev_log(
    kind: str, syslog: SyslogTrap, decoy: socket.socket, world_tmp: Path
) -> None:
    before = (mounts(), os.path.lexists("/dev/log"))
    host = host_with(kind, world_tmp)
    log(host)  # without the trap: the host's logger gets it, if there is one
    assert len(received(decoy)) == (kind in ("socket", "link"))
    log(host, syslog.enter)
    assert syslog.records() == [(AUTHPRIV_NOTICE, "probe")]
    assert received(decoy) == []
    assert (mounts(), os.path.lexists("/dev/log")) == before
    assert list(syslog.scratch.iterdir()) == []


def test_a_stream_trap_reads_glibcs_stream_records(world_tmp: Path) -> None:
    """glibc's syslog(3) retries a stream /dev/log (EPROTOTYPE) and ends each
    record with NUL: the trap reads them as the IMP's are compared."""
    with syslog_trap(world_tmp, socket.SOCK_STREAM) as trap:
        log(trap.enter)
        log(trap.enter)
        assert trap.records() == [(AUTHPRIV_NOTICE, "probe")] * 2


def test_no_syslog_hides_the_hosts_dev_log_and_binds_var_log(
    decoy: socket.socket, world_tmp: Path
) -> None:
    before = (mounts(), os.path.lexists("/dev/log"))
    (world_tmp / "nolog").mkdir()
    namespace = no_syslog(world_tmp / "nolog")
    log(host_with("socket", world_tmp), namespace.enter)
    assert received(decoy) == []

    def write_var_log() -> None:
        Path("/var/log/probe").write_text("seen")

    log(namespace.enter, write_var_log)
    assert (namespace.log.var_log / "probe").read_text() == "seen"
    assert not Path("/var/log/probe").exists()
    assert (mounts(), os.path.lexists("/dev/log")) == before
    assert list(namespace.scratch.iterdir()) == []
