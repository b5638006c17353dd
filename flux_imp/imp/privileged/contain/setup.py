"""Everything the privileged parent puts around one job shell, and undoes
after it: PAM session, job cgroup and limits, device program, private /tmp.

Imported only when the configuration or the options ask for any of it, so
the uncontained path pays nothing.  Two halves:

* :func:`plan` decides, with no side effect: which PAM service, which job
  cgroup under which parent with which limits, which device rules on which
  cgroup, which tmpfs size.  It reads ``[exec]``, the IMP's own cgroup,
  ``/proc/self/mounts`` and ``cgroup.type`` files (is a cgroup2 parent, is
  a root cgroup) and checks that libpam loads.  It dies with the refusal.
* :class:`Containment` carries a :class:`ContainPlan` out in the parent
  before the fork, each step noted in the audit trail once done, and any
  failure is fatal after undoing what was done.  ``enter()`` runs in the
  forked child (still root); ``finish()`` in the parent once the job's
  cgroup is empty.
"""

from __future__ import annotations

from .... import conf as cf
from ....fs import join
from ...log import ImpError, die, log
from . import cgroup as jobcgroup

TYPE_CHECKING = False  # annotations only (mypy reads this as true)
if TYPE_CHECKING:  # devices (and bpf) load only when containment asks for them
    from typing import Any

    from ... import audit
    from ...cgroup import CgroupInfo
    from ...devices import DeviceRules, Rule
    from ...options import Limits
    from ...state import Imp
    from .cgroup import JobCgroup

PAM_SERVICE = "flux"  # pam.SERVICE, without loading ctypes to print it
_NO_PAM = "exec: pam-support=true, but IMP was built without --enable-pam"


class CgroupPlan:
    """The job cgroup ``<parent>/imp-shell-<arg>`` and what goes in its files."""

    __slots__ = ("arg", "limits", "name", "parent", "path", "values")

    def __init__(self, parent: str, arg: str, limits: Limits) -> None:
        self.parent = parent
        self.arg = arg  # the job id, argv[1] of the shell
        self.name = f"imp-shell-{arg}"
        self.path = join(parent, self.name)
        self.limits = limits  # RFC 15 names -> value (None: infinity)
        self.values = jobcgroup.limit_values(limits)  # interface file -> text

    def __repr__(self) -> str:
        return f"CgroupPlan(path={self.path!r}, values={self.values!r})"

    def notes(self) -> dict[str, audit.Value]:
        return {"cgroup": self.path, "limits": [f"{k}={v}" for k, v in self.values.items()]}

    def as_dict(self) -> dict[str, object]:
        return {"parent": self.parent, "name": self.name, "path": self.path,
                "limits": {k: "infinity" if v is None else v for k, v in self.limits.items()},
                "files": dict(self.values)}  # fmt: skip


class DevicePlan:
    """The allow-list (resolved by the caller) and the cgroup it goes on."""

    __slots__ = ("cgroup", "policy", "rules")

    def __init__(self, policy: str, rules: tuple[Rule, ...], cgroup: str) -> None:
        self.policy = policy
        self.rules = rules
        self.cgroup = cgroup

    def __repr__(self) -> str:
        return f"DevicePlan(policy={self.policy!r}, cgroup={self.cgroup!r}, rules={self.texts()!r})"

    def texts(self) -> list[str]:
        return [rule.text() for rule in self.rules]

    def notes(self) -> dict[str, audit.Value]:
        return {"device_policy": self.policy, "device_cgroup": self.cgroup,
                "devices": self.texts()}  # fmt: skip

    def as_dict(self) -> dict[str, object]:
        return {"policy": self.policy, "cgroup": self.cgroup,
                "allow": self.texts() or ["nothing: every device is denied"]}  # fmt: skip


class TmpPlan:
    """A new mount namespace with empty tmpfs on ``dirs``."""

    __slots__ = ("dirs", "size")

    def __init__(self, size: str | None) -> None:
        from .namespaces import DIRS

        self.size = size  # tmpfs size= (None: the kernel's default, half of RAM)
        self.dirs = DIRS

    def __repr__(self) -> str:
        return f"TmpPlan(size={self.size!r}, dirs={self.dirs!r})"

    def notes(self) -> dict[str, audit.Value]:
        return {"private_tmp": list(self.dirs)}

    def as_dict(self) -> dict[str, object]:
        return {"dirs": list(self.dirs), "size": self.size}


class ContainPlan:
    """What surrounds the job: each part None when not configured or asked."""

    __slots__ = ("cgroup", "devices", "limits_ignored", "pam_service", "private_tmp")

    def __init__(self) -> None:
        self.pam_service: str | None = None
        self.cgroup: CgroupPlan | None = None
        self.limits_ignored = False  # limits asked for, but no [exec.cgroup]
        self.devices: DevicePlan | None = None
        self.private_tmp: TmpPlan | None = None

    def __repr__(self) -> str:
        return (f"ContainPlan(pam_service={self.pam_service!r}, cgroup={self.cgroup!r}, "
                f"devices={self.devices!r}, private_tmp={self.private_tmp!r})")

    def notes(self) -> list[dict[str, audit.Value]]:
        """What each step records once done, in the order they are done."""
        steps: list[dict[str, audit.Value]] = []
        if self.pam_service is not None:
            steps.append({"pam_session": self.pam_service})
        steps += [part.notes() for part in (self.cgroup, self.devices, self.private_tmp)
                  if part is not None]
        return steps

    def as_dict(self) -> dict[str, object]:
        return {
            "pam_service": self.pam_service,
            "cgroup": None if self.cgroup is None else self.cgroup.as_dict(),
            "limits_ignored": self.limits_ignored,
            "devices": None if self.devices is None else self.devices.as_dict(),
            "private_tmp": None if self.private_tmp is None else self.private_tmp.as_dict(),
        }


# ---------------------------------------------------------- the judgement


def plan(exec_conf: Any, arg: str, device: DeviceRules | None, limits: Limits,
         imp_cgroup: CgroupInfo, notes: audit.Trail) -> ContainPlan:
    """Decide the containment, in the order it is set up; die with the refusal.

    Each step used to be carried out before the next was decided, so a
    refusal's record shows the steps before it: ``notes`` gets those."""
    contain = ContainPlan()
    try:
        contain.pam_service = _pam_service(exec_conf)
        contain.cgroup = _plan_cgroup(exec_conf, arg, limits, imp_cgroup)
        contain.limits_ignored = contain.cgroup is None and bool(limits)
        contain.devices = _plan_devices(
            device, None if contain.cgroup is None else contain.cgroup.path, imp_cgroup)
        contain.private_tmp = _plan_tmp(exec_conf)
    except ImpError:
        for fields in contain.notes():
            notes.note(**fields)
        raise
    return contain


def _pam_service(exec_conf: Any) -> str | None:
    if not cf.as_bool(cf.get_in(exec_conf, "pam-support")):
        return None
    from . import pam

    if pam.load() is None:
        die(_NO_PAM)
    return PAM_SERVICE


def _plan_cgroup(exec_conf: Any, arg: str, limits: Limits,
                 imp_cgroup: CgroupInfo) -> CgroupPlan | None:
    table = cf.get_in(exec_conf, "cgroup")
    if not isinstance(table, dict):
        return None
    parent = table.get("parent")
    if not isinstance(parent, str):
        if not imp_cgroup.unified:
            die("exec: cgroup: the IMP is not in a cgroup2 hierarchy")
        parent = imp_cgroup.path.rstrip("/") or "/"
    # JobCgroup.create checks these again; here so that they are judged
    # (and a dry run refuses) before anything is set up, as they were.
    if not jobcgroup._ARG.fullmatch(arg):
        die(f"exec: cgroup: job id '{arg}' cannot name a cgroup")
    if not parent.startswith("/") or jobcgroup.cgroup2_mount(parent) is None:
        die(f"exec: cgroup: parent {parent} is not in a cgroup2 hierarchy")
    return CgroupPlan(parent, arg, limits)


def _plan_devices(device: DeviceRules | None, job_cgroup: str | None,
                  imp_cgroup: CgroupInfo) -> DevicePlan | None:
    """The allow-list the child resolved, on the job's cgroup or else the IMP's."""
    if device is None:
        return None
    if job_cgroup is not None:  # made below its parent: never a root cgroup
        return DevicePlan(device.policy, tuple(device.rules), job_cgroup)
    if not imp_cgroup.unified:
        die("exec: failed to apply device containment policy: "
            "the IMP is not in a cgroup2 hierarchy")
    where = imp_cgroup.path
    if jobcgroup.is_root(where):
        # Upstream would attach here and cut the whole machine off its devices.
        die("exec: failed to apply device containment policy: refusing to attach "
            f"a device program to the root cgroup {where}")
    return DevicePlan(device.policy, tuple(device.rules), where)


def _plan_tmp(exec_conf: Any) -> TmpPlan | None:
    table = cf.get_in(exec_conf, "private-tmp")
    if not isinstance(table, dict):
        return None
    from .namespaces import SIZE

    size = table.get("size")
    if size is not None and not (isinstance(size, str) and SIZE.fullmatch(size)):
        die("exec: private-tmp: invalid size")
    return TmpPlan(size)


# ------------------------------------------------------------ the effects


class Containment:
    """A ContainPlan carried out: what enter() and finish() need."""

    def __init__(self, trail: audit.Trail) -> None:
        self.trail = trail
        self.pam: Any = None  # a pam.Session
        self.cgroup: JobCgroup | None = None
        self.tmp: TmpPlan | None = None

    @classmethod
    def carry_out(cls, contain: ContainPlan, target: str, trail: audit.Trail) -> Containment:
        """Set ``contain`` up for user ``target``, each step noted once done."""
        self = cls(trail)
        try:
            if contain.pam_service is not None:
                self._open_pam(target)
            if contain.cgroup is not None:
                self._make_cgroup(contain.cgroup)
            elif contain.limits_ignored:
                log.debug("cgroup: no [exec.cgroup]: resource limits ignored")
            if contain.devices is not None:
                self._attach(contain.devices)
            if contain.private_tmp is not None:
                self.tmp = contain.private_tmp  # mounted by enter(), in the child
                trail.note(**contain.private_tmp.notes())
        except BaseException:
            self.finish(audited=False)
            raise
        return self

    def _open_pam(self, target: str) -> None:
        from . import pam

        lib = pam.load()
        if lib is None:  # judged loadable a moment ago
            die(_NO_PAM)
        self.pam = pam.Session(lib, target)
        self.trail.note(pam_session=PAM_SERVICE)

    def _make_cgroup(self, job: CgroupPlan) -> None:
        self.cgroup = jobcgroup.JobCgroup.create(job.parent, job.arg, job.limits)
        self.trail.note(**job.notes())

    def _attach(self, devices: DevicePlan) -> None:
        from . import bpf

        try:
            bpf.attach(devices.cgroup, list(devices.rules))
        except OSError as exc:
            log.warn(f"device: failed to attach BPF program to cgroup {devices.cgroup}: "
                     f"{exc.strerror}")
            die(f"exec: failed to apply device containment policy: {exc.strerror}")
        self.trail.note(**devices.notes())

    def _devices(self, imp: Imp, device: DeviceRules | None) -> None:
        """Decide and attach in one step (the root-cgroup refusal's unit test)."""
        where = None if self.cgroup is None else self.cgroup.path
        devices = _plan_devices(device, where, imp.cgroup)
        if devices is not None:
            self._attach(devices)

    # ---------------------------------------------------- the job's side

    def enter(self) -> None:
        """In the forked child, as root: join the cgroup, then the namespace."""
        if self.cgroup is not None:
            self.cgroup.enter()
        if self.tmp is not None:
            from .namespaces import private_tmp

            private_tmp(self.tmp.size)

    # ---------------------------------------------------- after the job

    def deferred_finish(self) -> tuple[int, str, str] | None:
        """finish()'s audit record for a lingering parent that is not Python
        (flux-imp-proxy), formatted now: (syslog priority, the record if the
        cgroup is removed, if not), empty texts without a job cgroup.  None
        when finish() must run here: pam_close_session belongs in the
        process that opened the session (its modules keep state there)."""
        if self.pam is not None:
            return None
        if self.cgroup is None:
            return 0, "", ""
        priority, removed = self.trail.deferred("finished", cgroup_removed="yes")
        return priority, removed, self.trail.deferred("finished", cgroup_removed="no")[1]

    def finish(self, audited: bool = True) -> None:
        """After the job (its cgroup empty): remove the cgroup, close PAM."""
        removed = self.cgroup.remove() if self.cgroup is not None else None
        if self.pam is not None:
            self.pam.close()
            self.pam = None
        if audited and self.cgroup is not None:
            self.trail.decide("finished", cgroup_removed="yes" if removed else "no")
