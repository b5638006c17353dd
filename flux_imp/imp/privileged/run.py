"""``flux-imp run NAME``, the privileged half: runs as root.

Two steps: run_rules.judge() decides, with no side effect, from the
child's request, the config and the caller (command looked up again, its
path checked as root, the caller against ``allowed-users``, the variables
filtered again, PID 1's limits read); carry_out() then does what the plan
says: takes PID 1's resource limits and nice value (not the caller's) and
runs the command as root, staying behind to forward signals to its
process group.
"""

from __future__ import annotations

import posix

from ...sign.kv import KV
from .. import audit
from ..log import die
from ..privsep import require_child_ok
from ..run_rules import RunPlan, RunRequest, judge, run
from ..state import Imp
from ..verdict import Refusal

TYPE_CHECKING = False  # annotations only: typing costs start-up time
if TYPE_CHECKING:
    from typing import NoReturn


def parent(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("run", "privileged")
    with trail.refusals():
        require_child_ok(imp.ps, "run")
        plan = judge(RunRequest.from_kv(kv), imp.conf, imp.caller(), trail)
        if isinstance(plan, Refusal):
            plan.raise_()
    carry_out(imp, plan, trail)


def carry_out(imp: Imp, plan: RunPlan, trail: audit.Trail) -> NoReturn:
    """Take the plan's limits, record the decision, run the command."""
    with trail.refusals():
        # Ours now, so the command's: none of the caller's limits.
        trail.note(limits_capped=_take_limits(plan) or None)
        trail.decide("allowed")
    run(imp, plan)


def _take_limits(plan: RunPlan) -> list[str]:
    """Give ourselves, hence the command, the plan's limits and nice value;
    the names of those the kernel kept lower."""
    import resource

    infinity, capped = resource.RLIM_INFINITY, []
    for number, (name, soft, hard) in enumerate(plan.limits or ()):
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
    if plan.nice is None:
        return capped
    try:
        posix.setpriority(posix.PRIO_PROCESS, 0, plan.nice)
    except PermissionError:  # a lower nice value needs CAP_SYS_NICE
        capped.append("nice value")
    except OSError as exc:
        die(f"run: failed to set nice value: {exc.strerror}")
    return capped
