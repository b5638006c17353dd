"""``flux-imp exec``, the privileged half: runs as root.

Two steps.  :func:`judge` trusts nothing the child sent and decides, with
no side effect: the caller check, the strict decoding of the message, J
verified again, the target user from J, root and shells not allowed
refused, the job's environment (the caller's without dynamic-loader
variables) and the containment that is configured or requested
(contain/setup.py: PAM session, job cgroup and limits, device program,
private /tmp).  Its answer is a Refusal or an :class:`ExecPlan`.
:func:`carry_out` then waits for the child, sets the containment up and
forks the job shell through proxy.py, which lingers as the plan says.
The shell gets the target's credentials, cwd ``/``, the caller's umask and
the planned environment.  Unlike upstream's, it also gets a session of its
own (no controlling terminal: the caller's tty is out of its reach), a new
session keyring (not the caller's) and no file descriptor but 0, 1 and 2;
its parent is still the IMP.  Every decision is audited (audit.py).
"""

from __future__ import annotations

import posix
import sys

from ... import conf as cf
from ...sign.kv import KV
from .. import audit, creds, options
from ..environ import steers_loader
from ..exec_rules import (
    Request,
    check_caller,
    exec_conf,
    exec_shell,
    note_command,
    note_token,
    security_context,
    shell_allowed,
    verify,
)
from ..log import ImpError, die
from ..options import OptionsError
from ..verdict import Caller, Refusal, refusal_of

TYPE_CHECKING = False  # annotations only (mypy reads this as true)
if TYPE_CHECKING:
    import pwd
    from typing import Any, NoReturn

    from ...sign import Context
    from ..cgroup import CgroupInfo
    from ..environ import CallerEnv
    from ..impconfig import ImpConfig
    from ..state import Imp
    from .contain.setup import ContainPlan


_MESSAGE_KEYS = frozenset({"cmd", "J", "shell_path"})


def _is_arg_key(name: str) -> bool:
    """``args<N>``, N decimal without a leading zero (was re ``args(0|[1-9][0-9]*)``)."""
    digits = name[4:]
    return (name.startswith("args") and digits.isascii() and digits.isdigit()
            and (digits == "0" or digits[0] != "0"))


# ------------------------------------------------------------- the plan


class Lingering:
    """What the privileged parent does while the job runs (proxy.py, linger.py)."""

    __slots__ = ("after", "kill", "notify_socket", "waits_for")

    def __init__(self, contain: ContainPlan | None, imp_cgroup: CgroupInfo,
                 notify_socket: str | None) -> None:
        job = None if contain is None or contain.cgroup is None else contain.cgroup.path
        if job is not None:
            self.kill = f"SIGKILL every process in the job cgroup {job}, and the IMP's children"
            self.waits_for: str | None = job
        elif imp_cgroup.kill_mode:
            self.kill = (f"SIGKILL every process in the IMP's cgroup {imp_cgroup.path} "
                         "but the IMP (if none could be, the IMP's children)")
            self.waits_for = imp_cgroup.path
        else:
            self.kill = "SIGKILL the IMP's children"
            self.waits_for = None
        self.notify_socket = notify_socket  # sd_notify READY=1, STOPPING=1, STATUS=
        self.after: list[str] = []  # once the job (and its cgroup) is gone
        if job is not None:
            self.after.append(f"remove the job cgroup {job}")
        if contain is not None and contain.pam_service is not None:
            self.after.append(f"close the PAM session ({contain.pam_service})")
        self.after.append("exit as the job shell did (its code, or its signal)")

    def __repr__(self) -> str:
        return (f"Lingering(kill={self.kill!r}, waits_for={self.waits_for!r}, "
                f"notify_socket={self.notify_socket!r}, after={self.after!r})")

    def as_dict(self) -> dict[str, object]:
        import signal  # the enum names: for printing only, never on the IMP's path

        from ..proxy import FORWARDED

        return {"forwards": sorted(signal.Signals(sig).name for sig in FORWARDED),
                "on_SIGUSR1": self.kill, "waits_for_empty_cgroup": self.waits_for,
                "sd_notify": self.notify_socket, "after": list(self.after)}  # fmt: skip


class ExecPlan:
    """Everything ``exec`` will do: who runs what, where and how contained."""

    __slots__ = ("argv", "contain", "environ", "groups", "lingering", "shell", "umask", "user")
    # The same for every job of this IMP (not upstream's: see the module doc).
    cwd = "/"
    new_session = True  # setsid(): no controlling terminal
    new_session_keyring = True  # not the caller's keys
    fds = (0, 1, 2)  # every other descriptor closed before exec

    def __init__(self, user: pwd.struct_passwd, groups: list[int] | None, shell: str,
                 argv: list[str], environ: list[bytes], umask: int,
                 contain: ContainPlan | None, lingering: Lingering) -> None:
        self.user = user  # the target, from J's userid
        self.groups = groups  # as initgroups sets them (None: unreadable now)
        self.shell = shell
        self.argv = argv
        self.environ = environ  # NAME=VALUE entries, in the caller's order
        self.umask = umask  # the caller's
        self.contain = contain  # None: nothing configured or asked for
        self.lingering = lingering

    def __repr__(self) -> str:
        return (f"ExecPlan(user={self.user.pw_name!r}, uid={self.user.pw_uid}, "
                f"gid={self.user.pw_gid}, groups={self.groups!r}, argv={self.argv!r}, "
                f"environ=<{len(self.environ)} entries>, umask={self.umask:04o}, "
                f"contain={self.contain!r}, lingering={self.lingering!r})")

    def as_dict(self) -> dict[str, object]:
        return {
            "user": self.user.pw_name, "uid": self.user.pw_uid, "gid": self.user.pw_gid,
            "groups": self.groups, "shell": self.shell, "argv": list(self.argv),
            "environ": [e.decode("utf-8", "surrogateescape") for e in self.environ],
            "cwd": self.cwd, "umask": f"{self.umask:04o}", "new_session": self.new_session,
            "new_session_keyring": self.new_session_keyring, "fds": list(self.fds),
            "containment": None if self.contain is None else self.contain.as_dict(),
            "lingering": self.lingering.as_dict(),
        }  # fmt: skip


# ------------------------------------------------------------ the judgement


def judge(request: Request | KV, conf: ImpConfig, ctx: Context, caller: Caller,
          env: CallerEnv, imp_cgroup: CgroupInfo, notes: audit.Trail) -> ExecPlan | Refusal:
    """The decision, with no side effect, in upstream's order of checks.

    ``request`` is the child's message (decoded here, strictly, after the
    caller check, as upstream) or a Request already decoded; ``ctx`` the
    signing context loaded as root; ``env`` the caller's environment;
    ``imp_cgroup`` the cgroup the IMP runs in.  Facts go to ``notes`` (only
    its note(); nothing is recorded).  Reads the passwd and group
    databases, and what contain/setup.plan() reads when containment is on."""
    try:
        check_caller(conf, caller.name, notes)
        if isinstance(request, KV):
            request = _decode_request(request)
        note_command(notes, request.argv)
        note_token(notes, request.J)
        target = verify(ctx, request.J, notes)
        if target.pw_uid == 0:
            die("exec: switching to user root not supported")
        if not shell_allowed(conf, request.shell):
            die("exec: shell not in allowed-shells list")
        environ = _job_environment(conf, env)
        contain = None
        table = conf.section("exec")
        if _containment_wanted(table, request):
            from .contain import setup

            contain = setup.plan(table, request.argv[1], request.device, request.limits,
                                 imp_cgroup, notes)
    except ImpError as exc:
        return refusal_of(exc)
    return ExecPlan(target, _groups(target), request.shell, request.argv, environ,
                    caller.umask, contain, Lingering(contain, imp_cgroup,
                                                     env.get("NOTIFY_SOCKET")))


def _groups(user: pwd.struct_passwd) -> list[int] | None:
    try:
        return posix.getgrouplist(user.pw_name, user.pw_gid)
    except OSError:
        return None



# ------------------------------------------------------------- the effects


def parent(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("exec", "privileged")
    with trail.refusals():
        ctx = security_context(imp)  # root's: loaded before the fork (exec_rules.prepare)
        plan = judge(kv, imp.conf, ctx, imp.caller(), imp.env, imp.cgroup, trail)
        if isinstance(plan, Refusal):
            plan.raise_()
    carry_out(plan, imp, trail)


def carry_out(plan: ExecPlan, imp: Imp, trail: audit.Trail) -> NoReturn:
    """Do what ``plan`` says: once the child is gone, the session keyring and
    the containment, then the job shell, lingering as its parent."""
    target = plan.user
    with trail.refusals():
        assert imp.ps is not None
        if not imp.ps.wait():
            trail.decide("refused: unprivileged half failed")
            sys.exit(1)  # the child said why
        # Ours, and so the job's: made before PAM opens the session, so that
        # its modules (pam_keyinit, a Kerberos keyring cache) fill this one.
        creds.join_new_session_keyring(target)
        from ..proxy import spawn_and_proxy  # the parent's alone

        job = None
        if plan.contain is not None:
            from .contain.setup import Containment

            job = Containment.carry_out(plan.contain, target.pw_name, trail)
        trail.decide("allowed")

    def exec_child() -> NoReturn:
        if job is not None:
            job.enter()
        creds.become_user(target, plan.groups)
        _leave_callers_session()
        posix.umask(plan.umask)
        exec_shell(plan.shell, plan.argv, plan.environ)

    if job is None:
        spawn_and_proxy(imp, exec_child)
    spawn_and_proxy(imp, exec_child, job_cgroup=job.cgroup, finish=job.finish,
                    deferred_finish=job.deferred_finish)


def _leave_callers_session() -> None:
    """A session of its own, without a controlling terminal: the caller's
    tty (the shell's stdio may still be it) then refuses TIOCSTI, so the
    job cannot type commands into the caller's shell."""
    try:
        posix.setsid()
    except OSError as exc:
        die(f"exec: setsid: {exc.strerror}")


def _containment_wanted(exec_conf: Any, request: Request) -> bool:
    """Is any containment configured or requested?  (Cheap: no imports.)"""
    return (request.device is not None or cf.as_bool(cf.get_in(exec_conf, "pam-support"))
            or isinstance(cf.get_in(exec_conf, "cgroup"), dict)
            or isinstance(cf.get_in(exec_conf, "private-tmp"), dict))


def _decode_request(kv: KV) -> Request:
    """The child's message, strictly: anything missing, extra or odd fails."""
    token = kv.get_str("J")
    if token is None:
        die("exec: Error decoding J")
    shell = kv.get_str("shell_path")
    if shell is None:
        die("exec: Failed to get job shell path")
    argv = _decode_argv(kv)
    if argv is None or len(argv) < 2 or argv[0] != shell:
        die("exec: Failed to get job shell arguments")
    names = kv.keys()
    device = None
    if any(name.startswith("device.") for name in names):  # devices loads bpf: only then
        from .. import devices

        try:
            device = devices.decode(kv)
        except OptionsError as exc:
            die(f"exec: failed to decode device containment policy: {exc.strerror}")
    try:
        limits = options.decode_limits(kv)
    except OptionsError as exc:
        die(f"exec: failed to decode resource limits: {exc.strerror}")
    if len(set(names)) != len(names) or any(
        name not in _MESSAGE_KEYS and not _is_arg_key(name)
        and not name.startswith(("device.", "limit.")) for name in names
    ):
        die("exec: unexpected data from privsep child")
    return Request(shell, argv, token, device, limits)


def _decode_argv(kv: KV) -> list[str] | None:
    """``args0..argsN`` in order, all strings; None if not exactly that."""
    argv = []
    for i, (key, typ, raw) in enumerate(kv.split("args").items()):
        if key != str(i) or typ != "s":
            return None
        argv.append(raw.decode("utf-8", "surrogateescape"))
    return argv


def _job_environment(conf: ImpConfig, env: CallerEnv) -> list[bytes]:
    """The caller's environment minus what steers the dynamic loader."""
    if cf.as_bool(exec_conf(conf, "keep-loader-env")):
        return list(env.entries)
    return [entry for entry in env.entries if not _is_loader_variable(entry)]


def _is_loader_variable(entry: bytes) -> bool:
    return steers_loader(entry.partition(b"=")[0].decode("utf-8", "surrogateescape"))
