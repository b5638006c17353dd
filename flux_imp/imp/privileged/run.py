"""``flux-imp run NAME``, the privileged half: runs as root.

Looks the command up again, checks its path as root and the caller
against ``allowed-users``, filters the variables again, takes PID 1's
resource limits and nice value (not the caller's) and runs the command,
staying behind to forward signals to its process group.
"""

from __future__ import annotations

import os

from ...sign.kv import KV
from .. import audit
from ..log import die
from ..run_rules import authorize, lookup, run
from ..state import Imp

_RLIM_NLIMITS = 16  # Linux's resource limits, RLIMIT_CPU (0) to RLIMIT_RTTIME (15)


def parent(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("run", "privileged")
    with trail.refusals():
        if imp.ps is None:
            die("run: unprivileged process exited abnormally")
        imp.ps.require_child_ok("run")
        name = kv.get_str("command")
        if not name:
            die("run: command required")
        trail.note(command=name)
        table, path = lookup(imp, name)
        trail.note(path=path)
        env = authorize(imp, table, kv, trail)
        # Ours now, so the command's: none of the caller's limits.
        trail.note(limits_capped=_take_pid1_limits() or None)
        trail.decide("allowed")
    run(imp, path, env)


def _pid1_limits() -> list[tuple[str, int, int]]:
    """PID 1's resource limits, ``(name, soft, hard)`` by RLIMIT_ number."""
    import resource

    def value(text: str) -> int:
        return resource.RLIM_INFINITY if text == "unlimited" else int(text)

    limits = []
    try:
        with open("/proc/1/limits", encoding="ascii") as f:
            rows = f.read().splitlines()[1:]  # a heading, then one row a limit, in order
        for row in rows[:_RLIM_NLIMITS]:
            # A 25-column name, then soft, hard and (maybe) units.
            soft, hard = row[25:].split()[:2]
            limits.append((row[:25].rstrip(), value(soft), value(hard)))
    except (OSError, ValueError):
        die("run: failed to read PID 1's resource limits")
    if len(limits) != _RLIM_NLIMITS:
        die("run: failed to read PID 1's resource limits")
    return limits


def _take_pid1_limits() -> list[str]:
    """Give ourselves, hence root's command, PID 1's limits and nice value
    instead of the caller's; the names of those the kernel kept lower."""
    import resource

    infinity, capped = resource.RLIM_INFINITY, []
    for number, (name, soft, hard) in enumerate(_pid1_limits()):
        try:
            try:
                resource.prlimit(0, number, (soft, hard))
            except PermissionError:
                # Raising a hard limit needs CAP_SYS_RESOURCE, which e.g. a
                # container may lack: then as high as the kernel allows.
                own = resource.getrlimit(number)[1]
                if own != infinity and (soft == infinity or soft > own):
                    soft = own
                resource.prlimit(0, number, (soft, own))
                capped.append(name)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            die(f"run: failed to set {name}: {reason}")
    try:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 1))
    except PermissionError:  # a lower nice value needs CAP_SYS_NICE
        capped.append("nice value")
    except OSError as exc:
        die(f"run: failed to set nice value: {exc.strerror}")
    return capped
