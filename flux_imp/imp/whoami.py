"""``flux-imp whoami``: each half prints its credentials."""

from __future__ import annotations

import os
import sys


def print_ids(prefix: str) -> None:
    sys.stdout.write(f"{prefix}: uid={os.getuid()} euid={os.geteuid()} "
                     f"gid={os.getgid()} egid={os.getegid()}\n")
    sys.stdout.flush()
