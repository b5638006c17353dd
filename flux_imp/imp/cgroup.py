"""The IMP's current cgroup (upstream src/imp/cgroup.c).

Detected for every command, as upstream does: statfs(/sys/fs/cgroup) is
cgroup2, or tmpfs with cgroup2 at /sys/fs/cgroup/unified (or cgroup v1's
name=systemd hierarchy at /sys/fs/cgroup/systemd).  "cgroup kill" mode
(SIGUSR1 kills every process in the cgroup) is on when the cgroup's
basename starts with ``imp-shell`` or ``flux-``.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

_TMPFS_MAGIC = 0x01021994
_CGROUP_SUPER_MAGIC = 0x27E0EB
_CGROUP2_SUPER_MAGIC = 0x63677270
_ROOT = "/sys/fs/cgroup"


def _fs_type(path: str) -> int | None:
    # struct statfs starts with f_type (a long) on Linux; 256 bytes is ample.
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)
    if libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _mount() -> tuple[str, bool] | None:
    """(mount dir, unified) or None."""
    kind = _fs_type(_ROOT)
    if kind == _CGROUP2_SUPER_MAGIC:
        return _ROOT, True
    if kind == _TMPFS_MAGIC:
        if _fs_type(f"{_ROOT}/unified") == _CGROUP2_SUPER_MAGIC:
            return f"{_ROOT}/unified", True
        if _fs_type(f"{_ROOT}/systemd") == _CGROUP_SUPER_MAGIC:
            return f"{_ROOT}/systemd", False
    return None


def _relpath(unified: bool) -> str | None:
    with open("/proc/self/cgroup", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            _, sep, rest = line.rstrip("\n").partition(":")
            subsys, sep2, rel = rest.partition(":")
            if not sep or not sep2:
                continue
            while rel.startswith("/.."):  # a cgroup namespace's view from outside
                rel = rel[3:]
            if (unified and subsys == "") or (not unified and subsys == "name=systemd"):
                return rel
    return None


@dataclass(frozen=True)
class CgroupInfo:
    path: str
    unified: bool
    kill_mode: bool

    def procs(self) -> list[int]:
        with open(f"{self.path}/cgroup.procs", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]

    def kill(self, sig: int) -> int:
        """Signal every process in the cgroup but us; -1 if none could be."""
        me, count, failed = os.getpid(), 0, False
        for pid in self.procs():
            if pid == me:
                continue
            try:
                os.kill(pid, sig)
                count += 1
            except OSError:
                failed = True
        return -1 if failed and count == 0 else count


def detect() -> CgroupInfo | None:
    found = _mount()
    if found is None:
        return None
    mount, unified = found
    try:
        rel = _relpath(unified)
    except OSError:
        return None
    if rel is None:
        return None
    path = mount + rel
    base = os.path.basename(path)
    return CgroupInfo(path, unified, base.startswith(("imp-shell", "flux-")))
