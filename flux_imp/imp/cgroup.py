"""The IMP's current cgroup (upstream src/imp/cgroup.c).

Detected for every command, as upstream does: statfs(/sys/fs/cgroup) is
cgroup2, or tmpfs with cgroup2 at /sys/fs/cgroup/unified (or cgroup v1's
name=systemd hierarchy at /sys/fs/cgroup/systemd).  "cgroup kill" mode
(SIGUSR1 kills every process in the cgroup) is on when the cgroup's
basename starts with ``imp-shell`` or ``flux-``.

statfs(2)'s answer is read from /proc/self/mountinfo where that is certain
(see _fs_type), and asked of libc through flux_imp.cfunc otherwise:
loading _ctypes would cost every command milliseconds.
"""

from __future__ import annotations

import posix

from ..fs import basename, fsdecode, fsencode, read_file

_TMPFS_MAGIC = 0x01021994
_CGROUP_SUPER_MAGIC = 0x27E0EB
_CGROUP2_SUPER_MAGIC = 0x63677270
_ROOT = "/sys/fs/cgroup"

# Filesystem type names that only one kind of superblock can have, with its
# f_type.  "tmpfs" is shmem's (TMPFS_MAGIC), except on kernels without
# CONFIG_SHMEM, where ramfs takes the name: see _fs_type().
_MAGIC_BY_NAME = {
    b"cgroup2": _CGROUP2_SUPER_MAGIC,
    b"cgroup": _CGROUP_SUPER_MAGIC,
    b"tmpfs": _TMPFS_MAGIC,
}


def _statfs_type(path: str) -> int | None:
    """statfs(2)'s f_type, through libc (_ctypes costs milliseconds to load)."""
    from .. import cfunc as C

    # struct statfs starts with f_type (a long) on Linux; 256 bytes is ample.
    statfs = C.Library(None).function("statfs", C.c_int, [C.c_char_p, C.c_void_p])
    buf = C.string_buffer(256)
    if statfs(fsencode(path), buf) != 0:
        return None
    return C.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _read_mountinfo() -> dict[bytes, list[list[bytes]]]:
    """Mount point -> its /proc/self/mountinfo lines (split); {} if unreadable."""
    try:
        data = read_file("/proc/self/mountinfo")
    except OSError:
        return {}
    mounts: dict[bytes, list[list[bytes]]] = {}
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        if len(fields) >= 10:
            mounts.setdefault(fields[4], []).append(fields)
    return mounts


def _fs_type(path: str, mounts: dict[bytes, list[list[bytes]]]) -> int | None:
    """statfs(path)'s f_type, read from mountinfo when that is certain.

    Only for a mount point: the mount on top there (the one no other mount
    there covers) must be the filesystem that stat(path) reports (same
    device) and have a type name that tells its f_type.  A "tmpfs" must
    also report blocks (ramfs, which takes that name without CONFIG_SHMEM,
    reports none).  Anything else asks statfs(2) itself.
    """
    here = mounts.get(fsencode(path), [])
    parents = {fields[1] for fields in here}
    top = [fields for fields in here if fields[0] not in parents]
    if len(top) == 1:
        fields = top[0]
        try:
            sep = fields.index(b"-", 6)
            magic = _MAGIC_BY_NAME.get(fields[sep + 1])
            st = posix.stat(path)
            same = fields[2] == b"%d:%d" % (posix.major(st.st_dev), posix.minor(st.st_dev))
            if magic == _TMPFS_MAGIC and same:
                same = posix.statvfs(path).f_blocks > 0
        except (ValueError, IndexError, OSError):
            magic, same = None, False
        if magic is not None and same:
            return magic
    return _statfs_type(path)


def _mount() -> tuple[str, bool] | None:
    """(mount dir, unified) or None."""
    mounts = _read_mountinfo()
    kind = _fs_type(_ROOT, mounts)
    if kind == _CGROUP2_SUPER_MAGIC:
        return _ROOT, True
    if kind == _TMPFS_MAGIC:
        if _fs_type(f"{_ROOT}/unified", mounts) == _CGROUP2_SUPER_MAGIC:
            return f"{_ROOT}/unified", True
        if _fs_type(f"{_ROOT}/systemd", mounts) == _CGROUP_SUPER_MAGIC:
            return f"{_ROOT}/systemd", False
    return None


def _relpath(unified: bool) -> str | None:
    for line in fsdecode(read_file("/proc/self/cgroup")).split("\n"):
        _, sep, rest = line.partition(":")
        subsys, sep2, rel = rest.partition(":")
        if not sep or not sep2:
            continue
        while rel.startswith("/.."):  # a cgroup namespace's view from outside
            rel = rel[3:]
        if (unified and subsys == "") or (not unified and subsys == "name=systemd"):
            return rel
    return None


class CgroupInfo(tuple[str, bool, bool]):
    """The IMP's cgroup: a named tuple (``path, unified, kill_mode``) built
    without dataclasses or typing, whose imports cost start-up time."""

    __slots__ = ()

    def __new__(cls, path: str, unified: bool, kill_mode: bool) -> CgroupInfo:
        return tuple.__new__(cls, (path, unified, kill_mode))

    @property
    def path(self) -> str:
        return self[0]

    @property
    def unified(self) -> bool:
        return self[1]

    @property
    def kill_mode(self) -> bool:
        return self[2]

    def __repr__(self) -> str:
        return (f"CgroupInfo(path={self.path!r}, unified={self.unified!r}, "
                f"kill_mode={self.kill_mode!r})")

    def procs(self) -> list[int]:
        with open(f"{self.path}/cgroup.procs", encoding="ascii") as f:
            return [int(p) for p in f.read().split()]

    def kill(self, sig: int) -> int:
        """Signal every process in the cgroup but us; -1 if none could be."""
        me, count, failed = posix.getpid(), 0, False
        for pid in self.procs():
            if pid == me:
                continue
            try:
                posix.kill(pid, sig)
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
    base = basename(path)
    return CgroupInfo(path, unified, base.startswith(("imp-shell", "flux-")))
