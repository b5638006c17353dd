"""``flux-imp whoami``: each half prints its credentials."""

from __future__ import annotations

import posix
import sys


def print_ids(prefix: str) -> None:
    sys.stdout.write(f"{prefix}: uid={posix.getuid()} euid={posix.geteuid()} "
                     f"gid={posix.getgid()} egid={posix.getegid()}\n")
    sys.stdout.flush()
