"""Everything the privileged parent puts around one job shell, and undoes
after it: PAM session, job cgroup and limits, device program, private /tmp.

Imported only when the configuration or the options ask for any of it, so
the uncontained path pays nothing.  Set-up happens in the parent before
the fork, each step noted in the audit trail, and any failure is fatal
after undoing what was done.  ``enter()`` runs in the forked child (still
root); ``finish()`` runs in the parent once the job's cgroup is empty.
"""

from __future__ import annotations

import pwd
from typing import TYPE_CHECKING, Any

from .... import conf as cf
from ... import audit
from ...log import die, log
from ...options import Limits
from ...state import Imp
from . import cgroup as jobcgroup
from .cgroup import JobCgroup

if TYPE_CHECKING:  # devices (and bpf) load only when containment asks for them
    from ...devices import DeviceRules


class Containment:
    def __init__(self, trail: audit.Trail) -> None:
        self.trail = trail
        self.pam: Any = None  # a pam.Session
        self.cgroup: JobCgroup | None = None
        self.private_tmp = False
        self.tmp_size: str | None = None

    @classmethod
    def setup(cls, imp: Imp, exec_conf: Any, arg: str, device: DeviceRules | None,
              limits: Limits, target: pwd.struct_passwd, trail: audit.Trail) -> Containment:
        self = cls(trail)
        try:
            self._pam(exec_conf, target)
            self._cgroup(imp, exec_conf, arg, limits)
            self._devices(imp, device)
            self._tmp(exec_conf)
        except BaseException:
            self.finish(audited=False)
            raise
        return self

    def _pam(self, exec_conf: Any, target: pwd.struct_passwd) -> None:
        if not cf.as_bool(cf.get_in(exec_conf, "pam-support")):
            return
        from . import pam

        lib = pam.load()
        if lib is None:
            die("exec: pam-support=true, but IMP was built without --enable-pam")
        self.pam = pam.Session(lib, target.pw_name)
        self.trail.note(pam_session="flux")

    def _cgroup(self, imp: Imp, exec_conf: Any, arg: str, limits: Limits) -> None:
        table = cf.get_in(exec_conf, "cgroup")
        if not isinstance(table, dict):
            if limits:
                log.debug("cgroup: no [exec.cgroup]: resource limits ignored")
            return
        parent = table.get("parent")
        if not isinstance(parent, str):
            if not imp.cgroup.unified:
                die("exec: cgroup: the IMP is not in a cgroup2 hierarchy")
            parent = imp.cgroup.path.rstrip("/") or "/"
        self.cgroup = JobCgroup.create(parent, arg, limits)
        self.trail.note(cgroup=self.cgroup.path,
                        limits=[f"{k}={v}" for k, v in jobcgroup.limit_values(limits).items()])

    def _devices(self, imp: Imp, device: DeviceRules | None) -> None:
        """Attach the allow-list the child resolved (None: no containment)."""
        if device is None:
            return
        from . import bpf

        if self.cgroup is not None:
            where = self.cgroup.path
        elif not imp.cgroup.unified:
            die("exec: failed to apply device containment policy: "
                "the IMP is not in a cgroup2 hierarchy")
        else:
            where = imp.cgroup.path
        if jobcgroup.is_root(where):
            # Upstream would attach here and cut the whole machine off its devices.
            die("exec: failed to apply device containment policy: refusing to attach "
                f"a device program to the root cgroup {where}")
        rules = list(device.rules)
        try:
            bpf.attach(where, rules)
        except OSError as exc:
            log.warn(f"device: failed to attach BPF program to cgroup {where}: {exc.strerror}")
            die(f"exec: failed to apply device containment policy: {exc.strerror}")
        self.trail.note(device_policy=device.policy, device_cgroup=where,
                        devices=[rule.text() for rule in rules])

    def _tmp(self, exec_conf: Any) -> None:
        table = cf.get_in(exec_conf, "private-tmp")
        if not isinstance(table, dict):
            return
        from .namespaces import DIRS, SIZE

        size = table.get("size")
        if size is not None and not (isinstance(size, str) and SIZE.fullmatch(size)):
            die("exec: private-tmp: invalid size")
        self.private_tmp, self.tmp_size = True, size
        self.trail.note(private_tmp=list(DIRS))

    # ---------------------------------------------------- the job's side

    def enter(self) -> None:
        """In the forked child, as root: join the cgroup, then the namespace."""
        if self.cgroup is not None:
            self.cgroup.enter()
        if self.private_tmp:
            from .namespaces import private_tmp

            private_tmp(self.tmp_size)

    # ---------------------------------------------------- after the job

    def finish(self, audited: bool = True) -> None:
        """After the job (its cgroup empty): remove the cgroup, close PAM."""
        removed = self.cgroup.remove() if self.cgroup is not None else None
        if self.pam is not None:
            self.pam.close()
            self.pam = None
        if audited and self.cgroup is not None:
            self.trail.decide("finished", cgroup_removed="yes" if removed else "no")
