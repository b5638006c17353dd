"""``flux-imp whoami``, the unprivileged half."""

from __future__ import annotations

from ...sign.kv import KV
from ..state import Imp
from ..whoami import print_ids


def child(imp: Imp, kv: KV) -> None:
    if imp.ps is not None:
        imp.ps.send(kv, "whoami")
    print_ids("flux-imp: unprivileged")
