"""A private /tmp and /dev/shm for the job (not upstream; like Slurm's
tmpfs job container).

Done in the forked child, still root, before it drops privileges: a new
mount namespace (only the job's processes live in it; the shell stays the
IMP's direct child, so no PID namespace), made a slave of the host's so
nothing mounted here propagates back, and a fresh tmpfs on each directory.
The tmpfs lives as long as the namespace, i.e. until the job's last
process exits: nothing is left on disk to clean up as root.
"""

from __future__ import annotations

import posix
import re

from ....fs import is_dir
from ...log import die

_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_SLAVE = 0x2, 0x4, 0x4000, 0x80000
DIRS = ("/tmp", "/dev/shm")  # noqa: S108 (mount points, not temporary files)
# tmpfs size= syntax: bytes with an optional k/m/g suffix, or a % of RAM.
SIZE = re.compile(r"[1-9][0-9]{0,18}[kKmMgG%]?")


def private_tmp(size: str | None) -> None:
    """Enter a new mount namespace with empty tmpfs /tmp and /dev/shm."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            die(f"exec: private-tmp: {what}: {posix.strerror(ctypes.get_errno())}")

    check(libc.unshare(_CLONE_NEWNS), "unshare")
    check(libc.mount(b"none", b"/", None, _MS_REC | _MS_SLAVE, None), "mount /")
    data = b"mode=1777" + (b",size=" + size.encode() if size else b"")
    for path in DIRS:
        if is_dir(path):
            check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, data),
                  f"mount {path}")
