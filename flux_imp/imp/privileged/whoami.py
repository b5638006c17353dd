"""``flux-imp whoami``, the privileged half."""

from __future__ import annotations

from ...sign.kv import KV
from ..state import Imp
from ..whoami import print_ids


def parent(imp: Imp, kv: KV) -> None:
    print_ids("flux-imp: privileged")
