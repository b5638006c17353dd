"""Audit records: one line per decision (RFC 15 asks for an audit log of
every invocation; upstream only writes stderr, INTEROP.md section 6).

Records go to syslog (facility authpriv, ident ``flux-imp``, with the
pid), as::

    exec half=privileged caller_uid=1001 caller="alice" ... outcome="allowed"

Every string is quoted; ``"`` and ``\\`` are escaped with a backslash and
any other byte outside printable ASCII is written ``\\xHH``, so a record is
one line and no value can forge another field or record.  Long values are
cut (a ``...`` after the closing quote says so).

Nothing is lost silently.  The datagram is sent to /dev/log here, in
glibc's syslog(3) format, because syslog(3) says nothing when no daemon
listens.  A record syslog does not take goes to ``FALLBACK`` (root's, 0600
in a 0700 directory, opened O_APPEND|O_NOFOLLOW), written by the
privileged parent only: the unprivileged child hands its records to the
parent over a datagram socket made before the fork, and the parent writes
them under the child's pid as the kernel reports it (SCM_CREDENTIALS).
What cannot be written there either goes to stderr.  With
``audit-required`` set, a half refuses to act when syslog cannot be
reached, and no action follows a record that syslog did not take.  An IMP
that is not setuid has no privileged half: its records go to syslog only.
"""

from __future__ import annotations

import _socket
import errno
import posix
import sys
import time

from .log import ImpError, log

# Annotations only: typing, collections and contextlib cost start-up time.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType
    from typing import Union

    Value = Union[str, int, Sequence[str], None]  # None: the field is left out

    from hashlib import sha256
else:
    # CPython's own SHA-256 where it is built in (FIPS builds leave it out):
    # hashlib loads OpenSSL's libcrypto, which costs start-up time and the
    # lingering parent memory.  Same digest either way.  The module of this
    # version first: a failed import searches every path entry.
    try:
        if sys.version_info >= (3, 12):
            from _sha2 import sha256
        else:
            from _sha256 import sha256
    except ImportError:
        from hashlib import sha256

SYSLOG = "/dev/log"
FALLBACK_DIR = "/var/log/flux-imp"
FALLBACK = "audit.log"  # in FALLBACK_DIR
_AUTHPRIV, _NOTICE, _WARNING = 10 << 3, 5, 4
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SEND_TIMEOUT = 5.0  # seconds: a stuck syslog daemon means "not delivered", not a hang
_MAX_RELAYED = 1 << 16  # bytes of one record the child hands over
_MAX_DRAINED = 16  # records taken from the child per drain
# A relayed record is the child's word: one line of printable ASCII, or '?'.
_SCRUB = b"?" * 0x20 + bytes(range(0x20, 0x7F)) + b"?" * 0x81  # slices: no 256-byte generator
_MAX_TEXT = 1024  # characters of one string value
_MAX_ITEMS = 64  # strings of one list value


def quote(text: str) -> str:
    """``text`` as a double-quoted, printable-ASCII token."""
    cut = len(text) > _MAX_TEXT
    out = ['"']
    for char in text[:_MAX_TEXT]:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogateescape"))
    out.append('"...' if cut else '"')
    return "".join(out)


def render(value: str | int | Sequence[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    items = [quote(item) for item in value[:_MAX_ITEMS]]
    if len(value) > _MAX_ITEMS:
        items.append("...")
    return "[" + ",".join(items) + "]"


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, for records (e.g. of a J)."""
    return sha256(data).hexdigest()


def format_record(event: str, outcome: str, fields: dict[str, Value]) -> str:
    parts = [event]
    parts += [f"{key}={render(value)}" for key, value in fields.items() if value is not None]
    parts.append(f"outcome={quote(outcome)}")
    return " ".join(parts)


class _State:
    """How records are delivered in this process (set once by configure())."""

    required = False  # audit-required: act only on what syslog took
    relay: tuple[_socket.socket, _socket.socket] | None = None  # (parent's end, child's end)


def configure(required: bool, relay: bool) -> None:
    """At start-up, before the fork: ``audit-required``, and (setuid) the
    socket over which the child's undelivered records reach the parent."""
    _State.required = required
    if relay:
        ours, theirs = _socket.socketpair(_socket.AF_UNIX,
                                          _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        ours.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)  # the sender's pid
        ours.setblocking(False)
        _State.relay = (ours, theirs)


def _priority(outcome: str) -> int:
    """A record's syslog level: notice for ``allowed``, else warning."""
    return _NOTICE if outcome == "allowed" else _WARNING


def _tagged(pid: int, text: str) -> str:
    """What follows the timestamp in syslog, the fallback file and stderr
    alike (and what flux-imp-proxy is handed: Trail.deferred)."""
    return f"flux-imp[{pid}]: {text}"


def record(event: str, outcome: str, **fields: Value) -> None:
    """Log one decision; ``outcome`` is ``allowed`` or ``refused: <reason>``.

    An ``allowed`` record is what an action waits for: with audit-required,
    if syslog does not take it, it is not kept anywhere (the action will
    not happen) and ImpError says why, for Trail.refusals() to record."""
    text = format_record(event, outcome, fields)
    privileged = posix.geteuid() == 0
    if privileged:
        drain()  # the child's records first: they came first
    error = _syslog(_priority(outcome), text)
    if error is None:
        return
    if _State.required and outcome == "allowed":
        raise ImpError(_unlogged(error))
    if privileged:
        _write_fallback([(posix.getpid(), text)])
    elif _State.relay is not None:
        _hand_to_parent(text)


def _unlogged(error: OSError) -> str:
    return f"audit-required: cannot log to {SYSLOG}: {error.strerror}"


def _syslog(priority: int, text: str | None) -> OSError | None:
    """Send ``text`` to syslog as glibc's syslog(3) would (a datagram, or a
    stream record ending in NUL where the socket is a stream one); only
    connect if ``text`` is None.  The error, if it was not delivered."""
    data = b""
    if text is not None:
        now = time.localtime()
        stamp = (f"{_MONTHS[now.tm_mon - 1]} {now.tm_mday:2d} "
                 f"{now.tm_hour:02d}:{now.tm_min:02d}:{now.tm_sec:02d}")
        data = f"<{_AUTHPRIV | priority}>{stamp} {_tagged(posix.getpid(), text)}".encode()
    error = None
    for kind, end in ((_socket.SOCK_DGRAM, b""), (_socket.SOCK_STREAM, b"\0")):
        # Close-on-exec and closed after each record: no log socket reaches a job.
        sock = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(_SEND_TIMEOUT)
            sock.connect(SYSLOG)
            if text is not None:
                sock.sendall(data + end)
            return None
        except OSError as exc:
            error = exc
            if exc.errno != errno.EPROTOTYPE:
                break  # not a stream socket either
        finally:
            sock.close()
    return error


def _hand_to_parent(text: str) -> None:
    """The child: the record goes to the privileged parent, which writes it."""
    assert _State.relay is not None
    data = text.encode()
    if len(data) > _MAX_RELAYED:
        data = data[: _MAX_RELAYED - 3] + b"..."
    try:
        _State.relay[1].send(data, _socket.MSG_DONTWAIT)
    except OSError as exc:
        log.warn(f"audit: record not logged ({exc.strerror}): {text}")


def drain() -> None:
    """The privileged parent: write the records the child could not log."""
    if _State.relay is None or posix.geteuid() != 0:
        return
    found = []
    for _ in range(_MAX_DRAINED):
        try:
            data, ancillary, flags, _ = _State.relay[0].recvmsg(
                _MAX_RELAYED, _socket.CMSG_SPACE(12),
                _socket.MSG_DONTWAIT | _socket.MSG_CMSG_CLOEXEC)
        except OSError:  # BlockingIOError: nothing (more) to take
            break
        pid = 0  # unknown: the kernel always says, unless something is very wrong
        for level, kind, value in ancillary:
            if level != _socket.SOL_SOCKET:
                continue
            if kind == _socket.SCM_CREDENTIALS:
                pid = int.from_bytes(value[:4], sys.byteorder, signed=True)  # ucred.pid
            elif kind == _socket.SCM_RIGHTS:  # a hostile child's fds: never kept
                for i in range(0, len(value) - 3, 4):
                    posix.close(int.from_bytes(value[i:i + 4], sys.byteorder, signed=True))
        text = data.translate(_SCRUB).decode("ascii")
        if flags & _socket.MSG_TRUNC:
            text += "..."
        found.append((pid, text))
    if found:
        _write_fallback(found)


def _write_fallback(records: list[tuple[int, str]]) -> None:
    """Append ``(pid, text)`` records to FALLBACK; stderr if that fails."""
    now = time.localtime()
    zone = time.strftime("%z", now)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", now) + zone[:3] + ":" + zone[3:]
    data = "".join(f"{stamp} {_tagged(pid, text)}\n" for pid, text in records)
    try:
        fd = _open_fallback()
        try:
            view = memoryview(data.encode())
            while view:
                view = view[posix.write(fd, view):]
        finally:
            posix.close(fd)
    except OSError as exc:
        where = f"{FALLBACK_DIR}/{FALLBACK}"
        for pid, text in records:
            log.warn(f"audit: record not logged ({where}: {exc.strerror}): "
                     f"{_tagged(pid, text)}")


def _open_fallback() -> int:
    """FALLBACK for appending, only if it and its directory are root's alone.

    Made root:root: the parent's egid is the caller's, which must not
    become their group."""
    flags = posix.O_RDONLY | posix.O_DIRECTORY | posix.O_NOFOLLOW | posix.O_CLOEXEC
    try:
        dirfd = posix.open(FALLBACK_DIR, flags)
    except FileNotFoundError:
        try:
            posix.mkdir(FALLBACK_DIR, 0o700)
            posix.chown(FALLBACK_DIR, 0, 0, follow_symlinks=False)
        except FileExistsError:
            pass  # made meanwhile: checked below like any other
        dirfd = posix.open(FALLBACK_DIR, flags)
    try:
        _check_roots(posix.fstat(dirfd), FALLBACK_DIR)
        # O_NONBLOCK: a FIFO put there fails (ENXIO) instead of hanging us.
        flags = (posix.O_WRONLY | posix.O_APPEND | posix.O_NOFOLLOW | posix.O_NOCTTY
                 | posix.O_NONBLOCK)
        try:
            fd = posix.open(FALLBACK, flags | posix.O_CREAT | posix.O_EXCL | posix.O_CLOEXEC, 0o600,
                         dir_fd=dirfd)
            posix.fchown(fd, 0, 0)
        except FileExistsError:
            fd = posix.open(FALLBACK, flags | posix.O_CLOEXEC, dir_fd=dirfd)
    finally:
        posix.close(dirfd)
    try:
        st = posix.fstat(fd)
        _check_roots(st, FALLBACK)
        if (st.st_mode & 0o170000) != 0o100000:  # S_IFREG, without the stat module
            raise OSError(errno.EINVAL, f"{FALLBACK} not a regular file")
    except OSError:
        posix.close(fd)
        raise
    return fd


def _check_roots(st: posix.stat_result, name: str) -> None:
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise OSError(errno.EPERM, f"{name} not owned by root, or writable by group or others")


class Trail:
    """One invocation's audit record, filled in as facts become known."""

    def __init__(self, event: str, half: str) -> None:
        self.event = event
        self.fields: dict[str, Value] = {"half": half, "caller_uid": posix.getuid()}

    def note(self, **fields: Value) -> None:
        self.fields.update(fields)

    def decide(self, outcome: str, **fields: Value) -> None:
        record(self.event, outcome, **self.fields, **fields)

    def deferred(self, outcome: str, **fields: Value) -> tuple[int, str]:
        """decide()'s record, for flux-imp-proxy (the C lingering parent,
        same pid) to send later as record() would: its syslog priority and
        what follows the timestamp in syslog and the fallback file alike,
        ``flux-imp[PID]: <record>``.  Never for ``allowed`` (audit-required
        is record()'s alone)."""
        text = format_record(self.event, outcome, {**self.fields, **fields})
        return _AUTHPRIV | _priority(outcome), _tagged(posix.getpid(), text)

    def refusals(self) -> _Refusals:
        """Record any failure inside the block as a refusal, then re-raise."""
        return _Refusals(self)


class _Refusals:
    """Trail.refusals()'s context manager (contextlib costs start-up time)."""

    def __init__(self, trail: Trail) -> None:
        self.trail = trail

    def __enter__(self) -> None:
        """With audit-required, refuse before anything if syslog is unreachable."""
        if _State.required:
            error = _syslog(_NOTICE, None)
            if error is not None:
                message = _unlogged(error)
                self.trail.decide(f"refused: {message}")
                raise ImpError(message)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, ImpError):
            self.trail.decide(f"refused: {exc.message}")
        elif isinstance(exc, Exception):
            self.trail.decide(f"refused: internal error: {exc!r}")
        # Returns None: the exception (and any other, SystemExit...) goes on.
