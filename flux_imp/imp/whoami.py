"""``flux-imp whoami``: each half prints its credentials."""

from __future__ import annotations

import os
import sys

from ..sign.kv import KV
from .state import Imp


def _print_ids(prefix: str) -> None:
    sys.stdout.write(f"{prefix}: uid={os.getuid()} euid={os.geteuid()} "
                     f"gid={os.getgid()} egid={os.getegid()}\n")
    sys.stdout.flush()


def child(imp: Imp, kv: KV) -> None:
    if imp.ps is not None:
        imp.ps.send(kv, "whoami")
    _print_ids("flux-imp: unprivileged")


def parent(imp: Imp, kv: KV) -> None:
    _print_ids("flux-imp: privileged")
