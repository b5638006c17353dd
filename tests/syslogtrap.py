"""Audit capture: what the IMP sends to syslog(3), read from a socket of ours.

The IMP runs in a private mount namespace (entered by its preexec_fn, as
root) whose /dev/log is our datagram socket (or a stream one, as some
syslog daemons have), bind-mounted:

- over the host's /dev/log (or where that link leads), if there is one;
- else (none, or a dangling link) over an empty file in a private /dev:
  an overlay of the host's /dev whose upper layer is a private tmpfs.

Those mounts live and die with the namespace, so the host keeps its /dev
and its syslog daemon (if any) sees nothing; our socket and the (empty)
mount point are under the caller's temp dir.

NoSyslog is the opposite: a namespace with no /dev/log at all.  Either
can have a test directory over /var/log (FallbackLog), where the IMP's
fallback audit log then appears.
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
# The fallback audit log: "YYYY-MM-DDThh:mm:ss+hh:mm IDENT[PID]: TEXT".
_FALLBACK_RECORD = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d flux-imp\[(\d+)\]: ([ -~]*)"
)

_QUOTED = r'"(?:[^"\\]|\\.)*"(?:\.\.\.)?'
_FIELD = re.compile(rf' (\w+)=({_QUOTED}|\[(?:{_QUOTED}|,|\.\.\.)*\]|-?[0-9]+)')


def fields(text: str) -> tuple[str, dict[str, str]]:
    """The event and the fields of a record's text, which must parse whole;
    values stay as written (quoted)."""
    event, pos = text.split(" ", 1)[0], len(text.split(" ", 1)[0])
    found = {}
    while pos < len(text):
        match = _FIELD.match(text, pos)
        assert match, text[pos:]
        found[match[1]] = match[2]
        pos = match.end()
    return event, found


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


class _Namespace:
    """A private mount namespace that preexec() enters (as root)."""

    def enter(self) -> None:
        raise NotImplementedError

    def preexec(self, then: Callable[[], None] | None = None) -> Callable[[], None]:
        """A preexec_fn (run as root): enter(), then ``then`` (e.g. become a user)."""

        def preexec() -> None:
            self.enter()
            if then is not None:
                then()

        return preexec


class SyslogTrap(_Namespace):
    """A socket (datagram, or ``kind``) that the namespace of preexec() puts
    at /dev/log."""

    def __init__(self, tmp: Path, kind: int = socket.SOCK_DGRAM) -> None:
        self.path = tmp / "log.sock"
        self.scratch = tmp / "ns"
        self.scratch.mkdir()
        self.sock = socket.socket(socket.AF_UNIX, kind)
        self.sock.bind(str(self.path))
        if kind == socket.SOCK_STREAM:
            self.sock.listen(64)
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

    def raw(self) -> list[str]:
        """The records received so far, as sent: each datagram, or each
        NUL-terminated record of each connection to a stream socket."""
        if self.sock.type == socket.SOCK_STREAM:
            return self._stream_records()
        found = []
        with contextlib.suppress(BlockingIOError):
            while True:
                found.append(self.sock.recv(1 << 20).decode("ascii"))
        return found

    def _stream_records(self) -> list[str]:
        found: list[str] = []
        with contextlib.suppress(BlockingIOError):
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    conn.setblocking(True)
                    chunks = []
                    while chunk := conn.recv(1 << 16):
                        chunks.append(chunk)
                data = b"".join(chunks)
                assert data.endswith(b"\0"), data
                found.extend(part.decode("ascii") for part in data[:-1].split(b"\0"))
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


class FallbackLog:
    """A test directory (root's, 0755) to bind over /var/log in a private
    mount namespace: where the IMP's fallback audit log then appears."""

    def __init__(self, tmp: Path) -> None:
        self.var_log = tmp / "var-log"
        self.var_log.mkdir()
        os.chmod(self.var_log, 0o755)

    @property
    def path(self) -> Path:
        return self.var_log / "flux-imp" / "audit.log"

    def bind(self) -> None:
        """Our directory over /var/log (call in a private mount namespace)."""
        mount(str(self.var_log), "/var/log", None, MS_BIND)

    def records(self) -> list[tuple[int, str]]:
        """(pid, text) of each record in the fallback log; none if it is absent."""
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text(encoding="ascii").splitlines():
            match = _FALLBACK_RECORD.fullmatch(line)
            assert match, f"not a flux-imp audit record: {line!r}"
            found.append((int(match[1]), match[2]))
        return found


class NoSyslog(_Namespace):
    """The namespace of preexec() has no /dev/log, and ``log`` binds /var/log."""

    def __init__(self, tmp: Path) -> None:
        self.scratch = tmp / "nolog-ns"
        self.scratch.mkdir()
        self.log = FallbackLog(tmp)

    def enter(self) -> None:
        private_mounts()
        private_dev(self.scratch)
        with contextlib.suppress(FileNotFoundError):
            os.unlink("/dev/log")
        self.log.bind()


def _can_enter(namespace: _Namespace, what: str) -> None:
    """Skip the test where ``namespace`` cannot be had."""
    try:
        probe = subprocess.run(["true"], preexec_fn=namespace.preexec(), capture_output=True,
                               check=False)  # fmt: skip
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot give the IMP {what} here: {exc!r}")
    assert probe.returncode == 0


@contextlib.contextmanager
def syslog_trap(tmp: Path, kind: int = socket.SOCK_DGRAM) -> Iterator[SyslogTrap]:
    """A SyslogTrap in ``tmp`` (a test's own dir); skips the test where a
    private mount namespace cannot be had."""
    trap = SyslogTrap(tmp, kind)
    with trap.sock:
        _can_enter(trap, "a private /dev/log")
        yield trap


def no_syslog(tmp: Path) -> NoSyslog:
    """A NoSyslog in ``tmp`` (a test's own dir); skips the test where a
    private mount namespace cannot be had."""
    namespace = NoSyslog(tmp)
    _can_enter(namespace, "a private /dev and /var/log")
    return namespace
