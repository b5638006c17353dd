"""The job's process and its privileged parent (upstream exec.c and run.c
after fork): the fork, then who lingers as the job's parent.

The parent forks the child (the job shell, or run's script), which sets a
clean signal state and the caller's umask before it execs.  What the
parent then does for the job's lifetime (forward signals, turn SIGUSR1
into SIGKILL for the whole job, RFC 15, wait for the child and its cgroup,
exit the way the child did) is linger.py's, in Python, or the helper's.

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
Python lingers itself (linger.py, imported only then) when the launcher
names no helper (not setuid, or none installed) and when a PAM session is
open: pam_close_session must run in the process that opened the session,
whose modules keep their state in it (a site with ``pam-support`` pays the
interpreter's memory for every running job).
"""

from __future__ import annotations

import posix
import sys

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


class suppress:
    """contextlib.suppress, without contextlib (start-up time and memory)."""

    def __init__(self, *kinds: type[BaseException]) -> None:
        self.kinds = kinds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, self.kinds)


# What the lingering parent forwards to the job (and hands the helper).
FORWARDED = frozenset({
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCONT,
    signal.SIGALRM, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU,
})  # fmt: skip
CGROUP_POLL = 1.0  # seconds; cgroup.procs cannot be watched
JOB_POLL = 0.05  # seconds; a job cgroup's cgroup.events is cheap to read
SETTLE = 0.002  # after a signal, let killed processes leave cgroup.procs
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
    flush()  # nothing buffered may be written twice
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
        with suppress(OSError):
            posix.setpgid(pid, pid)
    child = Child(imp.cgroup, job_cgroup, pid, signal_group)
    socket = imp.env.get("NOTIFY_SOCKET")
    notify_or_warn(socket, "READY=1")
    sd_notify(socket, "STATUS=IMP is monitoring child and forwarding signals")
    if helper:
        records = (0, "", "") if finish is None else None
        if finish is not None and deferred_finish is not None:
            records = deferred_finish()
        if records is not None:
            _hand_over(helper, child, socket, records)  # returns only if it failed
    from .linger import linger  # only where Python lingers: its own module

    linger(child, socket, finish)


def _hand_over(helper: str, child: Child, socket: str | None,
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
    job = "" if child.job is None else child.job.path
    procs = job or (child.cgroup.path if child.cgroup.kill_mode else "")
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
        helper, str(child.pid), str(child.target),
        str(child.target if child.target < 0 and not job else 0),
        str(sum(1 << sig for sig in FORWARDED)),
        str(round((JOB_POLL if job else CGROUP_POLL) * 1000)),
        str(0 if job else round(SETTLE * 1000)), str(priority), job,
        job and f"{job}/cgroup.kill", procs and f"{procs}/cgroup.procs",
        job and f"{job}/cgroup.events")]
    argv += [where, *(fsencode(arg) for arg in (
        audit.SYSLOG, audit.FALLBACK_DIR, audit.FALLBACK))]
    audit.drain()  # the child's records go before any of ours, as record() has them
    flush()
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
            with suppress(OSError, ValueError):  # SIGKILL, SIGSTOP, libc's own
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
        with suppress(OSError):  # a cpuset changed since: keep what the kernel left us
            posix.sched_setaffinity(0, cpus)
        exec_child()
    except ImpError as exc:
        log.fatal(exc.message)
        code = exc.code
    except BaseException as exc:  # never unwind into the parent's code
        log.fatal(f"internal error: {exc!r}")
    flush()
    posix._exit(code)


class Child:
    """The job's process as its parent sees it: whom signals go to, what
    SIGUSR1 kills and what the parent waits for."""

    __slots__ = ("cgroup", "job", "pid", "target")

    def __init__(
        self, cgroup: CgroupInfo, job: JobCgroup | None, pid: int, signal_group: bool
    ) -> None:
        self.cgroup = cgroup
        self.job = job
        self.pid = pid
        # kill(-pgid) signals the group.  Safe until it is reaped: the
        # unreaped child keeps its pid, hence the group id, from being reused.
        self.target = -pid if signal_group else pid


def notify_or_warn(socket: str | None, message: str) -> None:
    try:
        notify(socket, message)
    except OSError as exc:
        log.warn(f"sd_notify {message} failed: {exc.strerror}")


def flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
