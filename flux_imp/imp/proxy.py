"""The lingering privileged parent of a job process (upstream exec.c and
run.c after fork, signals.c, pidinfo.c).

The parent forks the child, forwards signals to it, turns SIGUSR1 into
SIGKILL for the whole job (RFC 15), waits for the child and, in cgroup-kill
mode, for its cgroup to empty, then exits the way the child did.  With a
job cgroup of its own (privileged/contain/cgroup.py), that cgroup is what SIGUSR1 kills and
what the parent waits for, and ``finish`` runs once it is empty.

Unlike upstream, the child is reaped only after the cgroup wait: until
then it stays a zombie, which keeps its pid (and so its process group id)
from being given to another process that a forwarded signal or SIGUSR1's
SIGKILL would then hit.

Where the launcher names its helper (``imp.proxy``: flux-imp-proxy, a
small C program built with it, packaging/launcher/flux-imp-proxy.c), the
parent execs that helper right after the fork and it lingers instead, in
far less memory than an interpreter holds.  Every decision is made here
first (:func:`_hand_over`); the helper only carries them out, with the same
messages, notifications, audit record and exit.  Signals stay blocked
across the exec, and a blocked signal stays pending through execve, so
none sent during the hand-over is lost.  The helper's file is named
flux-imp (the launcher's Makefile refuses another name), so the job's
parent is never seen under any other name (flux-core and upstream's
tests look for it by that name): the job need not wait for the exec.
Python lingers itself when the launcher names no helper (not setuid, or
none installed) and when a PAM session is open: pam_close_session must
run in the process that opened the session, whose modules keep their
state in it (a site with ``pam-support`` pays the interpreter's memory
for every running job).

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
import sys
import time

from ..fs import fsencode
from . import sdnotify
from .log import ImpError, die, log
from .privsep import move, other_cpus
from .sdnotify import notify, sd_notify

# Annotations only: typing and collections cost import time and memory
# (the parent lingers for the whole job); mypy reads this as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from typing import NoReturn

    from .cgroup import CgroupInfo
    from .privileged.contain.cgroup import JobCgroup
    from .state import Imp
else:
    # _signal is what signal wraps: the same functions and numbers, without
    # its IntEnum classes (enum, functools, collections), which would cost
    # every exec start-up time and every lingering parent memory.
    import _signal as signal


class _suppress:
    """contextlib.suppress, without contextlib (start-up time and memory)."""

    def __init__(self, *kinds: type[BaseException]) -> None:
        self.kinds = kinds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, self.kinds)


_FORWARDED = frozenset({
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCONT,
    signal.SIGALRM, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU,
})  # fmt: skip
_HANDLED = _FORWARDED | {signal.SIGUSR1}
_WAITED = _HANDLED | {signal.SIGCHLD}
_CGROUP_POLL = 1.0  # seconds; cgroup.procs cannot be watched
_JOB_POLL = 0.05  # seconds; a job cgroup's cgroup.events is cheap to read
_SETTLE = 0.002  # after a signal, let killed processes leave cgroup.procs
_MAX_ARG = 131072 - 64  # bytes of one argv or environment string execve takes, with room


def spawn_and_proxy(
    imp: Imp, exec_child: Callable[[], NoReturn], *, signal_group: bool = False,
    job_cgroup: JobCgroup | None = None, finish: Callable[[], None] | None = None,
    deferred_finish: Callable[[], tuple[int, str, str] | None] | None = None,
) -> NoReturn:
    """Fork ``exec_child`` (in its own process group if ``signal_group``)
    and stay as its proxy until it and its cgroup (``job_cgroup`` if given,
    which the child enters itself) are gone, then call ``finish``; never
    returns.  With ``imp.proxy``, the helper lingers instead, unless there
    is a ``finish`` and ``deferred_finish`` (what the helper does in its
    place: Containment.deferred_finish) is missing or says None."""
    # An ignored SIGCHLD (possible without the launcher) would reap the child.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, signal.valid_signals())
    _flush()  # nothing buffered may be written twice
    helper = getattr(imp, "proxy", "")  # a stand-in Imp (tests) may have no helper
    # The child starts on another CPU (privsep.other_cpus) and waits for EOF
    # on this pipe, the parent's word that it was moved, before it takes
    # back the caller's CPUs.
    placed, moved = posix.pipe2(posix.O_CLOEXEC)
    cpus = posix.sched_getaffinity(0)
    elsewhere = other_cpus(cpus)
    try:
        pid = posix.fork()
    except OSError as exc:
        if finish is not None:
            finish()
        die(f"{imp.argv[1]}: fork: {exc.strerror}")
    if pid == 0:
        _child(exec_child, imp.umask, signal_group, placed, moved, cpus)
    del exec_child  # its closure (J, passwd entry, ...) is the child's business
    move(pid, elsewhere)
    posix.close(moved)
    posix.close(placed)
    if signal_group:
        # Also here, so a signal forwarded before the child's setpgrp() finds the group.
        with _suppress(OSError):
            posix.setpgid(pid, pid)
    proxy = _Proxy(imp.cgroup, job_cgroup, pid, signal_group)
    socket = imp.env.get("NOTIFY_SOCKET")
    _notify_or_warn(socket, "READY=1")
    sd_notify(socket, "STATUS=IMP is monitoring child and forwarding signals")
    if helper:
        records = (0, "", "") if finish is None else None
        if finish is not None and deferred_finish is not None:
            records = deferred_finish()
        if records is not None:
            _hand_over(helper, proxy, socket, records)  # returns only if it failed
    gc.enable()  # Python lingers, for as long as the job runs (main.main turned it off)
    status = proxy.wait_child()
    _notify_or_warn(socket, "STOPPING=1")
    sd_notify(socket, f"STATUS={_describe(status)}, waiting for cgroup")
    proxy.wait_cgroup()
    proxy.reap()  # no signal goes to its pid or group from here on
    if finish is not None:
        finish()
    sd_notify(socket, "STATUS=cgroup is now empty, exiting")
    _exit_like(status)


def _hand_over(helper: str, proxy: _Proxy, socket: str | None,
               records: tuple[int, str, str]) -> None:
    """Exec ``helper`` to linger in our place, every signal still blocked.

    Its argv, decided here, the numbers first: PID (the job's process, the
    IMP's only child), TARGET (where forwarded signals go: PID, or -PID for
    run's process group), GROUP (what SIGUSR1 also SIGKILLs: -PID for run's
    group, else 0), FORWARD (the forwarded signals as a bit mask), POLL_MS
    and SETTLE_MS (the cgroup wait's poll, and its pause after a signal,
    under a second), PRIORITY (the record's syslog priority); then the
    strings, "" for none: JOB (the job cgroup, removed once empty, and whose
    record is sent), KILL (its cgroup.kill, which SIGUSR1 writes), PROCS (a
    cgroup.procs whose processes but the IMP SIGUSR1 SIGKILLs where there is
    no KILL file: the job cgroup's on older kernels, the IMP's own in
    cgroup-kill mode, which the IMP then waits to be alone in), EVENTS (the
    job cgroup's cgroup.events, which the IMP waits to say "populated 0"),
    NOTIFY (NOTIFY_SOCKET: "-" if unset, else the checked value, else the
    errno that makes it unusable; a path is reached with the caller's ids,
    our real ones, which the exec keeps), then where audit.py sends a
    record: SYSLOG, FALLBACK_DIR, FALLBACK.  Its environment holds the job
    cgroup's "finished" record, for either outcome (FLUX_IMP_RECORD_REMOVED,
    FLUX_IMP_RECORD_KEPT): only root may read it (/proc/PID/environ), unlike
    argv.  The helper prints JOB and the records as they are: none has a
    control character (records are printable ASCII; a job cgroup path with
    one keeps Python lingering).  Returns only if the exec failed, or the
    helper cannot take this job; Python lingers then."""
    from . import audit

    priority, removed, kept = records
    job = "" if proxy.job is None else proxy.job.path
    procs = job or (proxy.cgroup.path if proxy.cgroup.kill_mode else "")
    try:
        address = sdnotify.checked(socket)
        where = b"-" if address is None else address
    except OSError as exc:
        where = str(exc.errno).encode()
    env = {name.encode(): text.encode() for name, text in (
        ("FLUX_IMP_RECORD_REMOVED", removed), ("FLUX_IMP_RECORD_KEPT", kept)) if text}
    if max(map(len, env.values()), default=0) > _MAX_ARG or not job.isprintable():
        return  # execve would refuse it (E2BIG), or the helper would print it unscrubbed
    argv = [fsencode(arg) for arg in (
        helper, str(proxy.pid), str(proxy.target),
        str(proxy.target if proxy.target < 0 and not job else 0),
        str(sum(1 << sig for sig in _FORWARDED)),
        str(round((_JOB_POLL if job else _CGROUP_POLL) * 1000)),
        str(0 if job else round(_SETTLE * 1000)), str(priority), job,
        job and f"{job}/cgroup.kill", procs and f"{procs}/cgroup.procs",
        job and f"{job}/cgroup.events")]
    argv += [where, *(fsencode(arg) for arg in (
        audit.SYSLOG, audit.FALLBACK_DIR, audit.FALLBACK))]
    audit.drain()  # the child's records go before any of ours, as record() has them
    _flush()
    try:
        posix.execve(helper, argv, env)
    except OSError as exc:
        log.warn(f"proxy: cannot exec {helper}: {exc.strerror}")


def _child(exec_child: Callable[[], NoReturn], umask: int, signal_group: bool, placed: int,
           moved: int, cpus: set[int]) -> NoReturn:
    """The forked child: a clean signal state, the caller's umask, then,
    once ``placed`` reads EOF (its parent closed ``moved``), the caller's
    ``cpus`` and exec."""
    code = 1
    try:
        posix.close(moved)  # only the parent's may remain
        # Dispositions first, so nothing the parent set runs once unblocked.
        for sig in range(1, signal.SIGRTMIN):
            with _suppress(OSError, ValueError):  # SIGKILL, SIGSTOP, libc's own
                signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        posix.umask(umask)  # the launcher set 022; the job gets what the caller had
        if signal_group:
            try:
                posix.setpgrp()
            except OSError as exc:
                die(f"setpgrp: {exc.strerror}")
        while posix.read(placed, 64):  # EOF: the parent is done moving us
            pass
        posix.close(placed)
        with _suppress(OSError):  # a cpuset changed since: keep what the kernel left us
            posix.sched_setaffinity(0, cpus)
        exec_child()
    except ImpError as exc:
        log.fatal(exc.message)
        code = exc.code
    except BaseException as exc:  # never unwind into the parent's code
        log.fatal(f"internal error: {exc!r}")
    _flush()
    posix._exit(code)


class _Proxy:
    """The parent's state: whom to signal and what to wait for."""

    def __init__(
        self, cgroup: CgroupInfo, job: JobCgroup | None, pid: int, signal_group: bool
    ) -> None:
        self.cgroup = cgroup
        self.job = job
        self.pid = pid
        # kill(-pgid) signals the group.  Safe until reap(): the unreaped
        # child keeps its pid, hence the group id, from being reused.
        self.target = -pid if signal_group else pid

    def handle(self, sig: int) -> None:
        if sig == signal.SIGUSR1 and self.job is not None:
            self.job.kill()
            # The child may not have entered the cgroup yet.
            with _suppress(OSError):
                _kill_pids(_children(), signal.SIGKILL)
        elif sig == signal.SIGUSR1:
            _kill_job(self.cgroup)
            if self.target < 0:
                # run: its whole process group too, even outside cgroup-kill mode.
                with _suppress(OSError):
                    posix.kill(self.target, signal.SIGKILL)
        elif sig in _FORWARDED:
            with _suppress(OSError):  # already gone: nothing to forward to
                posix.kill(self.target, sig)

    def wait_child(self) -> int:
        """Handle signals until the child exits, left unreaped; its wait status."""
        while True:
            try:
                # WNOWAIT: a zombie until reap(), so its pid stays ours.
                info = posix.waitid(posix.P_PID, self.pid,
                                    posix.WEXITED | posix.WNOHANG | posix.WNOWAIT)
            except ChildProcessError as exc:
                die(f"waitpid: {exc.strerror}")
            if info is not None:
                return _wait_status(info)
            self.handle(signal.sigwaitinfo(_WAITED).si_signo)

    def reap(self) -> None:
        try:
            posix.waitpid(self.pid, 0)
        except ChildProcessError as exc:
            die(f"waitpid: {exc.strerror}")

    def wait_cgroup(self) -> None:
        """In cgroup-kill mode, handle signals until only the IMP is left."""
        if self.job is not None:
            while self.job.busy():
                info = signal.sigtimedwait(_HANDLED, _JOB_POLL)
                if info is not None:
                    self.handle(info.si_signo)
            return
        if not self.cgroup.kill_mode:
            return
        while _busy(self.cgroup):
            info = signal.sigtimedwait(_HANDLED, _CGROUP_POLL)
            if info is not None:
                self.handle(info.si_signo)
                time.sleep(_SETTLE)


def _busy(cgroup: CgroupInfo) -> bool:
    try:
        return cgroup.kill(0) > 0
    except OSError:  # as upstream: an unreadable cgroup.procs ends the wait
        return False


def _kill_job(cgroup: CgroupInfo) -> None:
    """SIGUSR1: SIGKILL the cgroup but us, else (or if that fails) our children."""
    count = -1
    if cgroup.kill_mode:
        with _suppress(OSError):
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


def _notify_or_warn(socket: str | None, message: str) -> None:
    try:
        notify(socket, message)
    except OSError as exc:
        log.warn(f"sd_notify {message} failed: {exc.strerror}")


def _exit_like(status: int) -> NoReturn:
    """Exit with the child's code, or die of the signal that killed it."""
    _flush()
    if posix.WIFEXITED(status):
        posix._exit(posix.WEXITSTATUS(status))
    if not posix.WIFSIGNALED(status):
        posix._exit(1)
    sig = posix.WTERMSIG(status)
    with _suppress(OSError, ValueError):  # SIGKILL keeps its default anyway
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    with _suppress(OSError):
        signal.raise_signal(sig)
    log.fatal(f"failed to raise signal {sig}")
    posix._exit(128 + sig)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with _suppress(OSError, ValueError):
            stream.flush()
