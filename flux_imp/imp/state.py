"""What every command half gets: the IMP's state (upstream imp_state)."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field

from ..sign import Context
from .cgroup import CgroupInfo
from .environ import CallerEnv
from .impconfig import ImpConfig
from .privsep import Privsep


@dataclass
class Imp:
    argv: list[str]  # argv[0] is "flux-imp", argv[1] the command
    env: CallerEnv
    conf: ImpConfig
    cgroup: CgroupInfo
    umask: int  # the caller's, restored for the job
    test_build: bool
    ps: Privsep | None = None  # set in both halves when running setuid
    _sign_ctx: Context | None = field(default=None, repr=False)

    @property
    def setuid(self) -> bool:
        """Running as the privileged parent or its child (upstream imp->ps)."""
        return self.ps is not None

    def security_context(self) -> Context:
        """The signing library's context, configured as upstream's IMP does."""
        if self._sign_ctx is None:
            ctx = Context(self.conf.security_flags)
            ctx.configure(self.conf.security_pattern)
            self._sign_ctx = ctx
        return self._sign_ctx

    def real_user_name(self) -> str | None:
        try:
            return pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            return None
