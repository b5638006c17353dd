"""Audit capture: what the IMP sends to syslog(3), read from a socket of ours.

The IMP runs in a private mount namespace (entered by its preexec_fn, as
root) whose /dev/log is our datagram socket, bind-mounted:

- over the host's /dev/log (or where that link leads), if there is one;
- else (none, or a dangling link) over an empty file in a private /dev:
  an overlay of the host's /dev whose upper layer is a private tmpfs.

Those mounts live and die with the namespace, so the host keeps its /dev
and its syslog daemon (if any) sees nothing; our socket and the (empty)
mount point are under the caller's temp dir.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 0x1000, 0x4000, 0x40000
AUTHPRIV_NOTICE, AUTHPRIV_WARNING = 10 << 3 | 5, 10 << 3 | 4
# Loaded here: a preexec_fn runs in a forked child and must not go looking.
_LIBC = ctypes.CDLL(None, use_errno=True)
# glibc's syslog(3): "<PRI>Mmm dd hh:mm:ss IDENT[PID]: TEXT".
_RECORD = re.compile(
    r"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d flux-imp\[\d+\]: (.*)", re.DOTALL
)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(src: str, dst: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(_LIBC.mount(src.encode(), dst.encode(), fstype and fstype.encode(), flags,
                       data.encode() or None), f"mount {dst}")  # fmt: skip


def private_mounts() -> None:
    """Enter a new mount namespace that shares no mount events with the host."""
    _check(_LIBC.unshare(CLONE_NEWNS), "unshare")
    mount("none", "/", None, MS_REC | MS_PRIVATE)


def private_dev(scratch: Path) -> None:
    """Make /dev writable in this (private) namespace only: an overlay whose
    upper layer is a tmpfs mounted on ``scratch`` (an empty directory)."""
    mount("tmpfs", str(scratch), "tmpfs", 0, "mode=0755")
    for sub in ("upper", "work"):
        (scratch / sub).mkdir()
    mount("overlay", "/dev", "overlay", 0,
          f"lowerdir=/dev,upperdir={scratch}/upper,workdir={scratch}/work")  # fmt: skip


class SyslogTrap:
    """A datagram socket that the namespace of preexec() puts at /dev/log."""

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "log.sock"
        self.scratch = tmp / "ns"
        self.scratch.mkdir()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        os.chmod(self.path, 0o666)  # the unprivileged half logs as the caller

    def enter(self) -> None:
        """Enter a new private mount namespace whose /dev/log is our socket."""
        private_mounts()
        if not os.path.exists("/dev/log"):
            private_dev(self.scratch)
            with contextlib.suppress(FileNotFoundError):
                os.unlink("/dev/log")  # a dangling link to a daemon's socket
            Path("/dev/log").touch()
        mount(str(self.path), "/dev/log", None, MS_BIND)

    def preexec(self, then: Callable[[], None] | None = None) -> Callable[[], None]:
        """A preexec_fn (run as root): enter(), then ``then`` (e.g. become a user)."""

        def preexec() -> None:
            self.enter()
            if then is not None:
                then()

        return preexec

    def raw(self) -> list[str]:
        """The datagrams received so far, as sent."""
        found = []
        with contextlib.suppress(BlockingIOError):
            while True:
                found.append(self.sock.recv(1 << 20).decode("ascii"))
        return found

    def records(self) -> list[tuple[int, str]]:
        """(priority, text) of each record received so far; each must be a
        syslog(3) record of ident ``flux-imp`` with its pid."""
        found = []
        for raw in self.raw():
            match = _RECORD.fullmatch(raw)
            assert match, f"not a flux-imp syslog record: {raw!r}"
            found.append((int(match[1]), match[2]))
        return found


@contextlib.contextmanager
def syslog_trap(tmp: Path) -> Iterator[SyslogTrap]:
    """A SyslogTrap in ``tmp`` (a test's own dir); skips the test where a
    private mount namespace cannot be had."""
    trap = SyslogTrap(tmp)
    with trap.sock:
        try:
            probe = subprocess.run(["true"], preexec_fn=trap.preexec(), capture_output=True,
                                   check=False)  # fmt: skip
        except subprocess.SubprocessError as exc:
            pytest.skip(f"cannot give the IMP a private /dev/log here: {exc!r}")
        assert probe.returncode == 0
        yield trap
