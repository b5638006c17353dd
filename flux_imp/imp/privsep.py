"""Privilege separation: the one channel between the two halves.

The privileged parent forks a child that drops to the caller's ids for
good, waits for a go byte, parses every untrusted input and sends ONE kv
message (native int length 1..4 MiB, then the kv bytes).  The parent
trusts nothing in it: each command re-validates what matters.
"""

from __future__ import annotations

import posix
import sys

from ..sign.kv import KV, KVError
from . import creds
from .log import ImpError, log

# Annotations only: typing and collections cost start-up time.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

MAX_KVLEN = 4 * 1024 * 1024
# The length is a native C int (struct "=i"), packed with int methods.
_LEN_SIZE = 4


def _pack_len(length: int) -> bytes:
    return length.to_bytes(_LEN_SIZE, sys.byteorder, signed=True)


def _unpack_len(head: bytes) -> int:
    return int.from_bytes(head, sys.byteorder, signed=True)


def _read_exact(fd: int, count: int) -> bytes:
    chunks, left = [], count
    while left > 0:
        chunk = posix.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view) :]


def other_cpus(cpus: set[int]) -> set[int] | None:
    """``cpus`` but the one we run on, to start a child on (None: no other,
    or unknown): a scheduling hint, nothing depends on it.

    Linux starts a forked child on its parent's CPU, and here (2 vCPUs) it
    waited there up to 3 ms while the parent went on (tests on a 20 MiB
    process: the child ran only once the parent blocked, or a tick later).
    The parent's next work (importing its half) and the child's (parsing
    and verifying) are independent, so each gets a CPU: 2 ms less an exec;
    so are the job's start and its parent's exec of the lingering helper
    (proxy.py).  Read before the fork, so that moving the child is the
    parent's first act after it, before a tick can give the child the
    parent's CPU.  The parent moves the child before its go signal; the
    child, once it has it, widens its mask back to the caller's (a
    FLUX_IMP_EXEC_HELPER and the job run on the CPUs the caller gave the
    IMP).  The go signal follows at once, so the child, which needs a
    while to start, finds it there: a child that blocked for it waited, on
    this VM, about 1 ms for its idle vCPU to be woken (exec 0.3 ms less)."""
    if len(cpus) < 2:
        return None
    try:
        fd = posix.open("/proc/self/stat", posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            stat = posix.read(fd, 4096)
        finally:
            posix.close(fd)
        # Field 39, "processor": the 37th after the parenthesised comm.
        return cpus - {int(stat.rpartition(b")")[2].split()[36])}
    except (OSError, ValueError, IndexError):
        return None  # no /proc: start where it is


def move(pid: int, cpus: set[int] | None) -> None:
    """Child ``pid`` to ``cpus`` (other_cpus()), if any and if the kernel lets us."""
    if cpus:
        try:  # noqa: SIM105 - contextlib costs start-up time
            posix.sched_setaffinity(pid, cpus)
        except OSError:
            pass  # a cpuset changed: start where it is


class Privsep:
    """Parent side after start(); the child runs ``child_main`` and exits."""

    def __init__(self, pid: int, rfd: int, wfd: int) -> None:
        self.pid = pid
        self.rfd = rfd
        self.wfd = wfd

    @classmethod
    def start(cls, child_main: Callable[[Privsep], None]) -> Privsep:
        up_r, up_w = posix.pipe2(posix.O_CLOEXEC)  # parent -> child
        pp_r, pp_w = posix.pipe2(posix.O_CLOEXEC)  # child -> parent
        sys.stdout.flush()
        cpus = posix.sched_getaffinity(0)
        elsewhere = other_cpus(cpus)
        pid = posix.fork()
        if pid == 0:
            posix.close(up_w)
            posix.close(pp_r)
            cls._child(cls(0, up_r, pp_w), child_main, cpus)
        move(pid, elsewhere)
        posix.close(pp_w)
        try:
            _write_all(up_w, b"\0")  # go: the parent is ready to read
        except OSError as exc:
            raise ImpError("Privilege separation initialization failed") from exc
        posix.close(up_r)
        return cls(pid, pp_r, up_w)

    @staticmethod
    def _child(ps: Privsep, child_main: Callable[[Privsep], None], cpus: set[int]) -> NoReturn:
        code = 0
        try:
            creds.drop_to_real_ids()
            if _read_exact(ps.rfd, 1) != b"\0":
                raise ImpError("wait_for_parent: lost the privileged parent")
            try:  # noqa: SIM105 - contextlib costs start-up time
                posix.sched_setaffinity(0, cpus)  # after the parent's move()
            except OSError:
                pass  # a cpuset changed since: keep what the kernel left us
            child_main(ps)
        except ImpError as exc:
            log.fatal(exc.message)
            code = exc.code
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # the child must never unwind into the parent's code
            log.fatal(f"internal error: {exc!r}")
            code = 1
        try:
            sys.stdout.flush()
        finally:
            posix._exit(code)

    # -- child side ------------------------------------------------------
    def send(self, kv: KV, command: str) -> None:
        """Send the one message; upstream's error for ``command`` if it cannot go."""
        data = kv.encode()
        error = ImpError(f"{command}: failed to communicate with privsep parent")
        if not 0 < len(data) <= MAX_KVLEN:
            raise error
        try:
            _write_all(self.wfd, _pack_len(len(data)) + data)
        except OSError:
            raise error from None

    # -- parent side -----------------------------------------------------
    def recv(self) -> KV | None:
        """The child's message; None on EOF or any malformed message."""
        head = _read_exact(self.rfd, _LEN_SIZE)
        if len(head) != _LEN_SIZE:
            return None
        length = _unpack_len(head)
        if not 0 < length <= MAX_KVLEN:
            return None
        data = _read_exact(self.rfd, length)
        if len(data) != length:
            return None
        try:
            return KV.decode(data)
        except KVError:
            return None

    def wait(self) -> bool:
        """Reap the child; True if it exited 0."""
        if self.pid <= 0:
            return True
        try:
            _, status = posix.waitpid(self.pid, 0)
        except ChildProcessError:
            return False
        self.pid = -1
        return posix.WIFEXITED(status) and posix.WEXITSTATUS(status) == 0


def require_child_ok(ps: Privsep | None, command: str) -> None:
    """Reap the child; there must be one and it must have exited 0 before
    the privileged half of ``command`` acts."""
    if ps is None or not ps.wait():
        raise ImpError(f"{command}: unprivileged process exited abnormally")
