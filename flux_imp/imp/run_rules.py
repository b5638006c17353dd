"""``flux-imp run NAME``: what both halves decide alike (upstream run.c).

flux-core runs its prolog, epilog and housekeeping this way.  The command
is ``run.NAME.path``, run with no arguments, in ``/``, in a process group
of its own, as root, with an environment the IMP builds: the caller's
variables that ``run.NAME.allowed-environment`` lets through, then
FLUX_OWNER_USERID, HOME, USER and PATH.  Unlike upstream, a variable that
steers the loader, libc, a shell or an interpreter (environ.unsafe_for_root)
passes only if ``run.NAME.allowed-unsafe-environment`` also matches it, and
root's command gets umask 022 and PID 1's resource limits and nice value,
not the caller's.

The child names the command and collects the caller's variables.  The
parent judges the request (judge(): looks the command up again, checks its
path as root and the caller against ``allowed-users``, filters the
variables again, reads PID 1's limits) into a RunPlan, then carries it out
(privileged/run.py: takes the limits, runs the command with run(), staying
behind to forward signals to the process group).  Not setuid, the one
process does all of it through the same judge(), and the command runs as
the caller with the caller's limits.

Each half audits its refusals; the half that starts the command audits
that, with the names of the variables it passes.
"""

from __future__ import annotations

import posix
import pwd

from .. import conf as cf
from ..conf.pathcheck import PathError, path_is_secure
from ..fs import read_file
from ..sign.kv import KV
from . import audit
from .environ import unsafe_for_root
from .log import ImpError, die
from .verdict import Caller, Refusal, refusal_of

TYPE_CHECKING = False  # annotations only: typing costs start-up time
if TYPE_CHECKING:
    from typing import NoReturn

    from .impconfig import ImpConfig
    from .state import Imp

    Limits = list[tuple[str, int, int]]

_ENV_PREFIX = "IMP_RUN_ENV_"  # privsep keys of the forwarded variables
# flux-core gives these to every prolog and epilog: they pass any pattern list.
_ALWAYS_FORWARDED = ("FLUX_JOB_ID", "FLUX_JOB_USERID")
_NAME_MAX = 128  # longer variable names are skipped, as upstream
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_RLIM_NLIMITS = 16  # Linux's resource limits, RLIMIT_CPU (0) to RLIMIT_RTTIME (15)


class RunRequest:
    """What the child asks for: the command's name and the caller's
    variables it offers (``(name, KV type, raw value)``, in order)."""

    __slots__ = ("command", "env")

    def __init__(self, command: str | None, env: list[tuple[str, str, bytes]]) -> None:
        self.command = command
        self.env = env

    @classmethod
    def from_kv(cls, kv: KV) -> RunRequest:
        """The privsep message the child sent (put_caller_env's keys)."""
        return cls(kv.get_str("command"), list(kv.split(_ENV_PREFIX).items()))

    def __repr__(self) -> str:
        return f"RunRequest(command={self.command!r}, env={[n for n, _, _ in self.env]!r})"


class RunPlan:
    """What ``run`` will do, decided by judge() and done by nothing else.

    ``as_root``: become uid 0, gid 0 and root's groups for good
    (creds.become_root_for_run) and take ``limits`` and ``nice`` (PID 1's)
    first; otherwise (not setuid) stay the caller, with the caller's
    limits (``limits`` and ``nice`` None).  ``env`` is execve's, in order.
    The lingering parent forwards signals to the command's process group
    (``own_group``) and turns SIGUSR1 into SIGKILL for it.
    """

    __slots__ = ("argv", "as_root", "command", "cwd", "env", "env_refused", "gid", "limits",
                 "nice", "own_group", "path", "uid", "umask", "user")  # fmt: skip

    def __init__(
        self, command: str, path: str, as_root: bool, user: str, uid: int, gid: int,
        env: dict[bytes, bytes], env_refused: list[str], umask: int,
        limits: Limits | None, nice: int | None,
    ) -> None:
        self.command = command
        self.path = path
        self.argv = [path]  # no arguments, as upstream
        self.as_root = as_root
        self.user = user
        self.uid = uid
        self.gid = gid
        self.env = env
        self.env_refused = env_refused
        self.cwd = "/"
        self.umask = umask
        self.limits = limits  # (name, soft, hard) by RLIMIT_ number
        self.nice = nice
        self.own_group = True

    def env_names(self) -> list[str]:
        return [name.decode("utf-8", "surrogateescape") for name in self.env]

    def as_dict(self) -> dict[str, object]:
        def text(raw: bytes) -> str:
            return raw.decode("utf-8", "surrogateescape")

        limits = None
        if self.limits is not None:
            import resource

            def shown(value: int) -> int | str:
                return "unlimited" if value == resource.RLIM_INFINITY else value

            limits = {name: [shown(soft), shown(hard)] for name, soft, hard in self.limits}
        return {
            "command": self.command, "path": self.path, "argv": self.argv,
            "user": self.user, "uid": self.uid, "gid": self.gid,
            "groups": "root's (initgroups)" if self.as_root else "the caller's, unchanged",
            "env": {text(name): text(value) for name, value in self.env.items()},
            "env_refused": self.env_refused, "cwd": self.cwd, "umask": f"{self.umask:04o}",
            "limits": limits if self.as_root else "the caller's, unchanged",
            "nice": self.nice if self.as_root else "the caller's, unchanged",
            "process_group": "its own" if self.own_group else "the IMP's",
            "lingering": {
                "signals": "forwarded to the command's process group",
                "SIGUSR1": "SIGKILL the process group (and the IMP's cgroup in cgroup-kill mode)",
                "exit": "waits for the command, then exits as it did",
            },
        }  # fmt: skip

    def __repr__(self) -> str:
        return "RunPlan(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"


def prepare(imp: Imp) -> None:
    """Before the fork (commands.prepare), as root: look the caller up,
    which loads the NSS modules for both halves (a failure shows again
    where a half looks)."""
    imp.real_user_name()


def judge(
    request: RunRequest, conf: ImpConfig, caller: Caller, notes: audit.Trail, *,
    target_uid: int = 0,
) -> RunPlan | Refusal:
    """The plan for ``request``, or upstream's refusal; no side effect.

    As root (``target_uid`` 0: the privileged parent, or a dry run), else
    as the IMP's own, unprivileged, effective uid (not setuid).  Reads the
    config, the passwd entries of the caller and the target, the command's
    path and its directories (as the effective user), and, as root, PID 1's
    limits and nice value.  What the audit record says goes to ``notes``
    (memory only: nothing is logged here), in upstream's order of checks.
    """
    try:
        return _plan(request, conf, caller, notes, target_uid)
    except ImpError as exc:
        return refusal_of(exc)


def _plan(request: RunRequest, conf: ImpConfig, caller: Caller, notes: audit.Trail,
          target_uid: int) -> RunPlan:  # fmt: skip
    name = request.command
    if not name:
        die("run: command required")
    notes.note(command=name)
    table, path = lookup(conf, name)
    notes.note(path=path)
    check_user(caller, table, notes)
    try:
        target = pwd.getpwuid(target_uid)
    except KeyError:
        die("run: failed to find target user")
    env, refused = command_env(table, request.env, caller, target)
    notes.note(env=[name.decode("utf-8", "surrogateescape") for name in env],
               env_refused=refused or None)
    as_root = target_uid == 0
    if not as_root:
        return RunPlan(name, path, False, target.pw_name, target_uid, caller.gid, env,
                       refused, caller.umask, None, None)  # fmt: skip
    # Root's files are root's business: umask 022, not the caller's.
    return RunPlan(name, path, True, target.pw_name, 0, 0, env, refused, 0o022,
                   pid1_limits(), _pid1_nice())  # fmt: skip


def lookup(conf: ImpConfig, name: str) -> tuple[object, str]:
    """The ``[run.NAME]`` table and its path, absolute and secure."""
    table = cf.get_in(conf.section("run"), name)
    if table is None:
        die(f"run: {name}: no configuration found")
    path = cf.as_str(cf.get_in(table, "path"))
    if not path.startswith("/"):
        die(f"run: {name}: path is missing or invalid")
    try:
        # As the effective user: the caller in the child, root in the parent.
        path_is_secure(path)
    except PathError as exc:
        die(f"run: {path}: {exc.text}")
    return table, path


def check_user(caller: Caller, table: object, notes: audit.Trail) -> None:
    if caller.name is None:
        die("Unable to lookup user")
    notes.note(caller=caller.name)
    if not cf.array_contains(cf.get_in(table, "allowed-users"), caller.name):
        die("run: permission denied")


def _forwardable(patterns: object, name: str) -> bool:
    # A name with "=" cannot come from an environment: only a forged message has one.
    if "=" in name or len(name.encode("utf-8", "surrogateescape")) > _NAME_MAX:
        return False
    return name in _ALWAYS_FORWARDED or cf.array_contains_match(patterns, name)


def put_caller_env(imp: Imp, table: object, kv: KV) -> None:
    """Offer the parent the caller's variables that the patterns allow."""
    # Upstream forwards nothing, not even FLUX_JOB_ID, without the key.
    if not isinstance(table, dict) or "allowed-environment" not in table:
        return
    patterns = table["allowed-environment"]
    for name, value in imp.env.items():
        if _forwardable(patterns, name):
            kv.put_str(_ENV_PREFIX + name, value)


def command_env(
    table: object, offered: list[tuple[str, str, bytes]], caller: Caller,
    target: pwd.struct_passwd,
) -> tuple[dict[bytes, bytes], list[str]]:
    """Offered variables (re-filtered), then FLUX_OWNER_USERID, HOME, USER,
    PATH; and the names refused as unsafe.

    A put replaces an earlier entry of that name, so a forwarded HOME,
    USER, PATH or FLUX_OWNER_USERID never survives.
    """
    patterns = cf.get_in(table, "allowed-environment")
    opted_in = cf.get_in(table, "allowed-unsafe-environment")
    env, refused = KV(), []
    for name, kind, value in offered:
        if not _forwardable(patterns, name):
            continue
        if unsafe_for_root(name) and not cf.array_contains_match(opted_in, name):
            refused.append(name)
            continue
        env.put_raw(name, kind, value)
    env.put_int("FLUX_OWNER_USERID", caller.uid)
    env.put_str("HOME", target.pw_dir)
    env.put_str("USER", target.pw_name)
    env.put_str("PATH", _PATH)
    encoded = {name.encode("utf-8", "surrogateescape"): value for name, _, value in env.items()}
    return encoded, refused


def pid1_limits() -> Limits:
    """PID 1's resource limits, ``(name, soft, hard)`` by RLIMIT_ number."""
    import resource

    def value(text: str) -> int:
        return resource.RLIM_INFINITY if text == "unlimited" else int(text)

    limits = []
    try:
        # A heading, then one row a limit, in order.  Not open(): its text
        # layer would load the ascii codec's module (with the file object,
        # 0.7 ms here); bytes.decode("ascii") needs none.
        rows = read_file("/proc/1/limits").decode("ascii").splitlines()[1:]
        for row in rows[:_RLIM_NLIMITS]:
            # A 25-column name, then soft, hard and (maybe) units.
            soft, hard = row[25:].split()[:2]
            limits.append((row[:25].rstrip(), value(soft), value(hard)))
    except (OSError, ValueError):
        die("run: failed to read PID 1's resource limits")
    if len(limits) != _RLIM_NLIMITS:
        die("run: failed to read PID 1's resource limits")
    return limits


def _pid1_nice() -> int:
    try:
        return posix.getpriority(posix.PRIO_PROCESS, 1)
    except OSError as exc:  # the message of old, when reading and setting were one step
        die(f"run: failed to set nice value: {exc.strerror}")



def run(imp: Imp, plan: RunPlan) -> NoReturn:
    """Start the command as ``plan`` says and linger as its parent."""
    # Only here: a setuid IMP's child never runs a command.
    from . import creds
    from .proxy import spawn_and_proxy

    try:
        posix.chdir(plan.cwd)
    except OSError:
        die(f"run: failed to chdir to {plan.cwd}")

    def exec_command() -> NoReturn:
        if plan.as_root:
            creds.become_root_for_run()
        posix.umask(plan.umask)  # as root, not the caller's (proxy set the caller's)
        try:
            posix.execve(plan.path, plan.argv, plan.env)
        except OSError as exc:
            from .helper import exec_failure_code  # only then: 0.25 ms of every run

            die(f"{plan.path}: {exc.strerror}", exec_failure_code(exc))

    spawn_and_proxy(imp, exec_command, signal_group=plan.own_group)
