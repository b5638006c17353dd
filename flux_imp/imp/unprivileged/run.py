"""``flux-imp run NAME``, the unprivileged half: runs as the caller.

Names the command, checks its path as the caller and offers the parent
the caller's variables that ``allowed-environment`` lets through.  Not
setuid (a test set-up), it does all of it and runs the command as the
caller.
"""

from __future__ import annotations

from ...sign.kv import KV
from .. import audit
from ..log import die
from ..run_rules import authorize, lookup, put_caller_env, run
from ..state import Imp


def child(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("run", "unprivileged")
    with trail.refusals():
        name = imp.argv[2] if len(imp.argv) > 2 else ""
        if not name:
            die("run: nothing to run")
        trail.note(command=name)
        table, path = lookup(imp, name)
        trail.note(path=path)
        kv.put_str("command", name)
        put_caller_env(imp, table, kv)
        if imp.ps is not None:
            imp.ps.send(kv, "run")
            return  # the parent decides and audits
        env = authorize(imp, table, kv, trail)  # not setuid: the parent's checks here
        trail.decide("allowed")
    run(imp, path, env)
