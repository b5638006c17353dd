"""What every command half gets: the IMP's state (upstream imp_state)."""

from __future__ import annotations

import posix
import pwd

# Annotations only: these modules are imported where they are used, and
# the signing library is imported only by commands that sign or verify.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from ..sign import Context
    from .cgroup import CgroupInfo
    from .environ import CallerEnv
    from .impconfig import ImpConfig
    from .privsep import Privsep
    from .verdict import Caller


class Imp:
    """The state (a plain class: dataclasses costs milliseconds to import)."""

    def __init__(
        self,
        argv: list[str],  # argv[0] is "flux-imp", argv[1] the command
        env: CallerEnv,
        conf: ImpConfig,
        cgroup: CgroupInfo,
        umask: int,  # the caller's, restored for the job
        test_build: bool,
        ps: Privsep | None = None,  # set in both halves when running setuid
        _sign_ctx: Context | None = None,
        cwd: str = "",  # the caller's ("" if unknown); only the child runs there
        proxy: str = "",  # the launcher's lingering helper (flux-imp-proxy), "" if none
    ) -> None:
        self.argv = argv
        self.env = env
        self.conf = conf
        self.cgroup = cgroup
        self.umask = umask
        self.test_build = test_build
        self.ps = ps
        self._sign_ctx = _sign_ctx
        self.cwd = cwd
        self.proxy = proxy

    @property
    def setuid(self) -> bool:
        """Running as the privileged parent or its child (upstream imp->ps)."""
        return self.ps is not None

    def security_context(self) -> Context:
        """The signing library's context, configured as upstream's IMP does."""
        if self._sign_ctx is None:
            from ..sign.context import Context
            from .impconfig import in_callers_cwd

            ctx = Context(self.conf.security_flags)
            pattern = self.conf.security_pattern
            # Set only by a test build: relative to the caller's cwd, as upstream.
            in_callers_cwd(pattern, self.cwd, lambda: ctx.configure(pattern))
            self._sign_ctx = ctx
        return self._sign_ctx

    def forget_security_context(self) -> None:
        """The privsep child's first act: what it verifies with, it loads
        itself, as the caller (as upstream's child does), never the context
        root loaded before the fork (exec_rules.prepare)."""
        self._sign_ctx = None

    def caller(self) -> Caller:
        """Who ran the IMP, as the judgements take it: the real ids (as sudo
        support may have set them), the name (None: no passwd entry), umask."""
        from .verdict import Caller

        return Caller(posix.getuid(), posix.getgid(), self.real_user_name(), self.umask)

    def real_user_name(self) -> str | None:
        try:
            return pwd.getpwuid(posix.getuid()).pw_name
        except KeyError:
            return None
