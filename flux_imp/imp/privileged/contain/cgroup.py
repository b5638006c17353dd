"""The job's own cgroup v2, ``imp-shell-<ARG>`` (not upstream: its IMP
leaves the cgroup to systemd, so without sdexec a job is not contained).

The privileged parent creates it under a configured parent (or under its
own cgroup), applies the resource owner's limits, and the forked child
moves itself in before it drops privileges and execs the shell.  SIGUSR1
kills the whole cgroup (``cgroup.kill``), so nothing the job forks can
escape; after the job the parent waits for it to empty and removes it.

cgroup v2's no-internal-processes rule: controllers are enabled in the
parent's ``cgroup.subtree_control`` only when a limit needs them, and the
kernel refuses that (EBUSY) while the parent itself holds processes (the
IMP's own cgroup does): the job then fails with an error saying so, and a
site configures an empty delegated parent instead.  The job cgroup is a
leaf; the IMP never enables controllers below it.
"""

from __future__ import annotations

import contextlib
import errno
import posix
import re
import signal
import time

from ....fs import exists, join, same_file
from ...log import die, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ...options import Limits

# ARG becomes a directory name: one safe path component, never "." or "..".
_ARG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,199}")
_CPU_PERIOD = 100_000  # microseconds, the kernel's and systemd's default
_CPU_MIN_QUOTA = 1_000  # the kernel refuses less (systemd clamps the same way)
# Limit name -> (controller, interface file).
_FILES = {
    "MemoryMax": ("memory", "memory.max"),
    "TasksMax": ("pids", "pids.max"),
    "CPUQuotaPerSecUSec": ("cpu", "cpu.max"),
}
_REMOVE_TRIES = 100  # x 10 ms: "populated 0" can precede rmdir's view of it


def cgroup2_mount(path: str) -> str | None:
    """The cgroup2 mount point that holds ``path`` (the longest match)."""
    best = None
    with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3 or fields[2] != "cgroup2":
                continue
            mount = fields[1].replace("\\040", " ")
            inside = path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and (best is None or len(mount) > len(best)):
                best = mount
    return best


def is_root(path: str) -> bool:
    """True for the root cgroup of a hierarchy: every cgroup but the root has
    a ``cgroup.type`` file, and the root is its mount point."""
    mount = cgroup2_mount(path)
    at_mount = mount is not None and same_file(path, mount)
    return at_mount or not exists(f"{path}/cgroup.type")


def cpu_max(usec_per_sec: int | None) -> str:
    """``cpu.max`` for systemd's CPUQuotaPerSecUSec, over a 100 ms period."""
    if usec_per_sec is None:
        return f"max {_CPU_PERIOD}"
    quota = max(_CPU_MIN_QUOTA, usec_per_sec * _CPU_PERIOD // 1_000_000)
    return f"{quota} {_CPU_PERIOD}"


def limit_values(limits: Limits) -> dict[str, str]:
    """Interface file -> what to write there."""
    values = {}
    for name, value in limits.items():
        _, file = _FILES[name]
        if name == "CPUQuotaPerSecUSec":
            values[file] = cpu_max(value)
        else:
            values[file] = "max" if value is None else str(value)
    return values


def _read_words(path: str) -> set[str]:
    with open(path, encoding="ascii") as f:
        return set(f.read().split())


def _write(path: str, text: str) -> None:
    """One write to an interface file that exists.  Never O_CREAT: cgroupfs
    answers a create with EACCES, which would hide a missing file's ENOENT
    (cgroup.kill before Linux 5.14, whose fallback then never ran)."""
    data = text.encode("ascii")
    fd = posix.open(path, posix.O_WRONLY | posix.O_CLOEXEC)
    try:
        if posix.write(fd, data) != len(data):
            raise OSError(errno.EIO, f"short write to {path}")
    finally:
        posix.close(fd)


def _enable_controllers(parent: str, limits: Limits) -> None:
    """Enable in ``parent`` what the limits need; fail closed if impossible."""
    needed = sorted({_FILES[name][0] for name in limits})
    if not needed:
        return
    try:
        available = _read_words(f"{parent}/cgroup.controllers")
        enabled = _read_words(f"{parent}/cgroup.subtree_control")
    except OSError as exc:
        die(f"exec: cgroup: {parent}: {exc.strerror}")
    for controller in needed:
        if controller in enabled:
            continue
        if controller not in available:
            die(f"exec: cgroup: controller {controller} is not available in {parent}, "
                "cannot apply the requested limit")
        try:
            _write(f"{parent}/cgroup.subtree_control", f"+{controller}")
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno == errno.EBUSY:
                why += " (a cgroup holding processes cannot give controllers to children)"
            die(f"exec: cgroup: cannot enable controller {controller} in {parent}: {why}")


class JobCgroup:
    """One job's cgroup directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(cls, parent: str, arg: str, limits: Limits) -> JobCgroup:
        """mkdir ``<parent>/imp-shell-<arg>`` and apply ``limits``; dies on failure."""
        if not _ARG.fullmatch(arg):
            die(f"exec: cgroup: job id '{arg}' cannot name a cgroup")
        if not parent.startswith("/") or cgroup2_mount(parent) is None:
            die(f"exec: cgroup: parent {parent} is not in a cgroup2 hierarchy")
        _enable_controllers(parent, limits)
        path = join(parent, f"imp-shell-{arg}")
        try:
            posix.mkdir(path, 0o755)  # EEXIST: never adopt a cgroup someone else made
        except OSError as exc:
            die(f"exec: cgroup: cannot create {path}: {exc.strerror}")
        job = cls(path)
        try:
            for file, value in limit_values(limits).items():
                try:
                    _write(f"{path}/{file}", value)
                except OSError as exc:
                    die(f"exec: cgroup: cannot set {file}={value} in {path}: {exc.strerror}")
                log.debug(f"cgroup: {file}={value}")
        except BaseException:
            job.remove()
            raise
        return job

    def enter(self) -> None:
        """Move the calling process (the forked child, still root) in."""
        try:
            _write(f"{self.path}/cgroup.procs", "0")  # "0": the writer itself
        except OSError as exc:
            die(f"exec: cgroup: cannot enter {self.path}: {exc.strerror}")

    def kill(self) -> None:
        """SIGKILL everything in the cgroup, atomically where the kernel can."""
        try:
            _write(f"{self.path}/cgroup.kill", "1")  # Linux >= 5.14
            return
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warn(f"Failed to forward SIGKILL: {exc.strerror}")
            return
        # Older kernels: one pass over cgroup.procs; a process forked during
        # it is caught by the next SIGUSR1 (the caller repeats them).
        with contextlib.suppress(OSError), open(f"{self.path}/cgroup.procs") as f:
            pids = [int(p) for p in f.read().split()]
        for pid in pids:
            with contextlib.suppress(OSError):
                posix.kill(pid, signal.SIGKILL)

    def busy(self) -> bool:
        """True while any process is in the cgroup (an unreadable one is empty)."""
        try:
            with open(f"{self.path}/cgroup.events", encoding="ascii") as f:
                return "populated 1" in f.read().splitlines()
        except OSError:
            return False

    def remove(self) -> bool:
        """rmdir the (empty) cgroup; False, with a warning, if it stays."""
        for _ in range(_REMOVE_TRIES):
            try:
                posix.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    log.warn(f"cgroup: cannot remove {self.path}: {exc.strerror}")
                    return False
            time.sleep(0.01)
        log.warn(f"cgroup: cannot remove {self.path}: still busy")
        return False
