"""The command table: name -> (unprivileged half, privileged half).

Halves are imported on demand so a command loads only what it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..sign.kv import KV
from .state import Imp

Half = Callable[[Imp, KV], None]

# name: (module, has a privileged half)
_COMMANDS = {
    "version": ("version", False),
    "whoami": ("whoami", True),
    "exec": ("exec", True),
    "run": ("run", True),
    "casign": ("casign", True),
}


def find(name: str, privileged: bool) -> Half | None:
    entry = _COMMANDS.get(name)
    if entry is None or (privileged and not entry[1]):
        return None
    module = importlib.import_module(f"{__package__}.{entry[0]}")
    half: Half = getattr(module, "parent" if privileged else "child")
    return half
