"""The lingering privileged parent of a job process, in Python (upstream
signals.c, pidinfo.c and the end of exec.c and run.c).

proxy.py forks the job and hands this over to the C helper where it can;
Python lingers here when the launcher names no helper, or a PAM session
must close in the process that opened it.  The parent forwards signals to
the child, turns SIGUSR1 into SIGKILL for the whole job (RFC 15), waits
for the child and, in cgroup-kill mode, for its cgroup to empty, then
exits the way the child did.  With a job cgroup of its own
(privileged/contain/cgroup.py), that cgroup is what SIGUSR1 kills and what
the parent waits for, and ``finish`` runs once it is empty.

Unlike upstream, the child is reaped only after the cgroup wait: until
then it stays a zombie, which keeps its pid (and so its process group id)
from being given to another process that a forwarded signal or SIGUSR1's
SIGKILL would then hit.

Signals are handled synchronously: the parent keeps every signal blocked
and takes the ones it handles (and SIGCHLD) with sigwaitinfo.  A Python
handler only runs between bytecodes, so a signal arriving just before a
blocking call would wait for that call to return; a pending signal cannot
be missed by sigwaitinfo.  As upstream, unhandled signals stay blocked;
unlike upstream, the child's fatal signal is unblocked before it is
re-raised, so a child killed by e.g. SIGSEGV no longer leaves the IMP
paused until some forwarded signal arrives.
"""

from __future__ import annotations

import gc
import posix
import time

from .log import die, log
from .proxy import CGROUP_POLL, FORWARDED, JOB_POLL, SETTLE, flush, notify_or_warn, suppress
from .sdnotify import sd_notify

# Annotations only (the parent lingers for the whole job); mypy reads this as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from typing import NoReturn

    from .cgroup import CgroupInfo
    from .proxy import Child
else:
    import _signal as signal  # what signal wraps, without its enums (see proxy.py)

_HANDLED = FORWARDED | {signal.SIGUSR1}
_WAITED = _HANDLED | {signal.SIGCHLD}


def linger(child: Child, socket: str | None, finish: Callable[[], None] | None) -> NoReturn:
    """Stay as ``child``'s parent until it and its cgroup are gone, then
    call ``finish`` and exit as it did; ``socket`` is NOTIFY_SOCKET."""
    gc.enable()  # for as long as the job runs (main.main turned it off)
    status = _wait_child(child)
    notify_or_warn(socket, "STOPPING=1")
    sd_notify(socket, f"STATUS={_describe(status)}, waiting for cgroup")
    _wait_cgroup(child)
    _reap(child)  # no signal goes to its pid or group from here on
    if finish is not None:
        finish()
    sd_notify(socket, "STATUS=cgroup is now empty, exiting")
    _exit_like(status)


def _handle(child: Child, sig: int) -> None:
    if sig == signal.SIGUSR1 and child.job is not None:
        child.job.kill()
        # The child may not have entered the cgroup yet.
        with suppress(OSError):
            _kill_pids(_children(), signal.SIGKILL)
    elif sig == signal.SIGUSR1:
        _kill_job(child.cgroup)
        if child.target < 0:
            # run: its whole process group too, even outside cgroup-kill mode.
            with suppress(OSError):
                posix.kill(child.target, signal.SIGKILL)
    elif sig in FORWARDED:
        with suppress(OSError):  # already gone: nothing to forward to
            posix.kill(child.target, sig)


def _wait_child(child: Child) -> int:
    """Handle signals until the child exits, left unreaped; its wait status."""
    while True:
        try:
            # WNOWAIT: a zombie until _reap(), so its pid stays ours.
            info = posix.waitid(posix.P_PID, child.pid,
                                posix.WEXITED | posix.WNOHANG | posix.WNOWAIT)
        except ChildProcessError as exc:
            die(f"waitpid: {exc.strerror}")
        if info is not None:
            return _wait_status(info)
        _handle(child, signal.sigwaitinfo(_WAITED).si_signo)


def _reap(child: Child) -> None:
    try:
        posix.waitpid(child.pid, 0)
    except ChildProcessError as exc:
        die(f"waitpid: {exc.strerror}")


def _wait_cgroup(child: Child) -> None:
    """In cgroup-kill mode, handle signals until only the IMP is left."""
    if child.job is not None:
        while child.job.busy():
            info = signal.sigtimedwait(_HANDLED, JOB_POLL)
            if info is not None:
                _handle(child, info.si_signo)
        return
    if not child.cgroup.kill_mode:
        return
    while _busy(child.cgroup):
        info = signal.sigtimedwait(_HANDLED, CGROUP_POLL)
        if info is not None:
            _handle(child, info.si_signo)
            time.sleep(SETTLE)


def _busy(cgroup: CgroupInfo) -> bool:
    try:
        return cgroup.kill(0) > 0
    except OSError:  # as upstream: an unreadable cgroup.procs ends the wait
        return False


def _kill_job(cgroup: CgroupInfo) -> None:
    """SIGUSR1: SIGKILL the cgroup but us, else (or if that fails) our children."""
    count = -1
    if cgroup.kill_mode:
        with suppress(OSError):
            count = cgroup.kill(signal.SIGKILL)
    if count >= 0:
        return
    try:
        _kill_pids(_children(), signal.SIGKILL)
    except OSError as exc:
        log.warn(f"Failed to forward SIGKILL: {exc.strerror}")


def _children() -> list[int]:
    """The IMP's direct children (upstream pid_kill_children)."""
    me = posix.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children", encoding="ascii") as f:
            found = [int(p) for p in f.read().split()]
    except FileNotFoundError:  # kernel without CONFIG_PROC_CHILDREN
        return scan_children(me)
    sane = [p for p in found if 1 < p <= 0x7FFFFFFF and p != me]
    for pid in set(found) - set(sane):
        log.warn(f"Ignoring suspect pid {pid} from /proc/{me}/task/{me}/children")
    return sane


def scan_children(parent: int) -> list[int]:
    """Children of ``parent`` found by reading every /proc/PID/status."""
    found = []
    for name in posix.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="ascii", errors="replace") as f:
                ppid = next((line.split()[1] for line in f if line.startswith("PPid:")), "")
        except FileNotFoundError:  # exited since listdir
            continue
        except OSError as exc:
            log.warn(f"Failed to get ppid of {name}: {exc.strerror}")
            continue
        if ppid == str(parent):
            found.append(int(name))
    return found


def _kill_pids(pids: list[int], sig: int) -> int:
    """Signal each pid; how many were signalled; OSError if all failed."""
    count, error = 0, None
    for pid in pids:
        try:
            posix.kill(pid, sig)
            count += 1
        except OSError as exc:
            error = exc
            log.warn(f"Failed to send signal {sig} to pid {pid}")
    if error is not None and count == 0:
        raise error
    return count


def _wait_status(info: posix.waitid_result) -> int:
    """waitid's report as the wait status waitpid would have given."""
    if info.si_code == posix.CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    return info.si_status | (0x80 if info.si_code == posix.CLD_DUMPED else 0)


def _describe(status: int) -> str:
    if posix.WIFEXITED(status):
        return f"IMP child exited ({posix.WEXITSTATUS(status)})"
    if posix.WIFSIGNALED(status):
        sig = posix.WTERMSIG(status)
        return f"IMP child {signal.strsignal(sig) or f'Unknown signal {sig}'}"
    return f"IMP child wait returned status={status}"


def _exit_like(status: int) -> NoReturn:
    """Exit with the child's code, or die of the signal that killed it."""
    flush()
    if posix.WIFEXITED(status):
        posix._exit(posix.WEXITSTATUS(status))
    if not posix.WIFSIGNALED(status):
        posix._exit(1)
    sig = posix.WTERMSIG(status)
    with suppress(OSError, ValueError):  # SIGKILL keeps its default anyway
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    with suppress(OSError):
        signal.raise_signal(sig)
    log.fatal(f"failed to raise signal {sig}")
    posix._exit(128 + sig)
