"""``flux-imp run NAME``, the unprivileged half: runs as the caller.

Names the command, checks its path as the caller and offers the parent
the caller's variables that ``allowed-environment`` lets through.  Not
setuid (a test set-up), it judges the request itself, as the parent would
(run_rules.judge()), and runs the command as the caller.
"""

from __future__ import annotations

import posix

from ...sign.kv import KV
from .. import audit
from ..log import die
from ..run_rules import RunRequest, judge, lookup, put_caller_env, run
from ..state import Imp
from ..verdict import Refusal


def child(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("run", "unprivileged")
    with trail.refusals():
        put_message(imp, kv, trail)
        if imp.ps is not None:
            imp.ps.send(kv, "run")
            return  # the parent decides and audits
        # Not setuid: the parent's judgement here, for the IMP's own (the caller's) uid.
        plan = judge(RunRequest.from_kv(kv), imp.conf, imp.caller(), trail,
                     target_uid=posix.geteuid())
        if isinstance(plan, Refusal):
            plan.raise_()
        trail.decide("allowed")
    run(imp, plan)


def put_message(imp: Imp, kv: KV, trail: audit.Trail) -> None:
    """The child's checks, then its request in ``kv`` (dies with the IMP's
    message).  Facts go to ``trail``, nothing is recorded: the admin dry
    run calls this too, then run_rules.judge()."""
    name = imp.argv[2] if len(imp.argv) > 2 else ""
    if not name:
        die("run: nothing to run")
    trail.note(command=name)
    table, path = lookup(imp.conf, name)
    trail.note(path=path)
    kv.put_str("command", name)
    put_caller_env(imp, table, kv)
