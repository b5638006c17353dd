"""The command table: name -> (unprivileged half, privileged half).

A command's unprivileged half is ``unprivileged/<name>.py`` ``child()``,
its privileged half ``privileged/<name>.py`` ``parent()``.  Halves are
imported on demand so a command loads only what it needs, and a process
only its own half.
"""

from __future__ import annotations

import posix
import sys

# Annotations only: typing and collections cost start-up time.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from ..sign.kv import KV
    from .state import Imp

    Half = Callable[[Imp, KV], None]
    Alone = Callable[[Imp], None]

# name: (module, has a privileged half, writes audit records, the module
# of the rules both halves apply or "": flux_imp/imp/<rules>.py)
_COMMANDS = {
    "version": ("version", False, False, ""),
    "whoami": ("whoami", True, False, ""),
    "exec": ("exec", True, True, "exec_rules"),
    "run": ("run", True, True, "run_rules"),
    "casign": ("casign", True, True, "casign_rules"),
}

# What a command's privileged half imports late, on its own (after the
# child's message), beside the half's module itself.  Only a hint for
# prepare_parent(): nothing else depends on it.
_PARENT_IMPORTS = {
    # The mechanisms: exec_rules.prepare(); cfunc: the session keyring's keyctl().
    "exec": ("flux_imp.imp.proxy", "flux_imp.cfunc"),
    "run": ("flux_imp.imp.proxy",),
}


# Commands whose privileged half looks up supplementary groups after the
# child's message (exec: the target's, getgrouplist; run: root's,
# initgroups).  A process's first such lookup loads the group database's
# NSS modules (0.2 ms here, libnss_systemd); prepare_parent() has root's
# own looked up first, while the child works.
_PARENT_GROUPS = frozenset({"exec", "run"})


def _import(name: str) -> ModuleType:
    __import__(name)  # importlib itself would cost start-up time
    return sys.modules[name]


def audits(name: str) -> bool:
    """Whether command ``name`` may write audit records (so needs audit.py
    configured before the fork); an unknown command writes none."""
    entry = _COMMANDS.get(name)
    return entry is not None and entry[2]


def parent_free(name: str) -> bool:
    """A known command with no privileged half: nothing of it runs as root."""
    entry = _COMMANDS.get(name)
    return entry is not None and not entry[1]


def find(name: str, privileged: bool) -> Half | None:
    entry = _COMMANDS.get(name)
    if entry is None or (privileged and not entry[1]):
        return None
    side = "privileged" if privileged else "unprivileged"
    module = _import(f"{__package__}.{side}.{entry[0]}")
    half: Half = getattr(module, "parent" if privileged else "child")
    return half


def alone(name: str) -> Alone:
    """The unprivileged half of ``name``, a command with no privileged half
    (parent_free()): it takes no message to fill, as nothing reads one."""
    entry = _COMMANDS[name]
    module = _import(f"{__package__}.unprivileged.{entry[0]}")
    half: Alone = module.child
    return half


def prepare(imp: Imp, name: str) -> None:
    """Before the fork, as root: import the rules both halves of command
    ``name`` apply, and run their ``prepare(imp)`` if they have one (work on
    root's own files only: the config, NSS, the signing context).

    Done once here, both halves have it: on two CPUs the child, often
    forked onto the parent's, would otherwise wait while the parent repeats
    the work (1 ms less a none exec here, 2 ms a munge one).  ``name`` is
    the caller's argv[1], only a guess: what runs is still decided by the
    child's message.
    """
    entry = _COMMANDS.get(name)
    if entry is None or not entry[1] or not entry[3]:
        return
    module = _import(f"{__package__}.{entry[3]}")
    ready: Callable[[Imp], None] | None = getattr(module, "prepare", None)
    if ready is not None:
        ready(imp)


def prepare_parent(name: str) -> None:
    """In the privileged parent, while the child works (before its message
    arrives): import what the privileged half of command ``name`` will, and
    load the NSS group modules it will use, in parallel with the child
    instead of after it.  Nothing for a command without a privileged half:
    the parent never runs such code."""
    entry = _COMMANDS.get(name)
    if entry is None or not entry[1]:
        return
    _import(f"{__package__}.privileged.{entry[0]}")
    for extra in _PARENT_IMPORTS.get(name, ()):
        _import(extra)
    if name in _PARENT_GROUPS:
        try:  # noqa: SIM105 - contextlib costs start-up time
            posix.getgrouplist("root", 0)  # root's own data: nothing of the caller's
        except OSError:
            pass  # the half's own lookup will meet it again

