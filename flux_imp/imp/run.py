"""``flux-imp run NAME``: run a configured command as root (upstream run.c).

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
parent looks the command up again, checks its path as root and the caller
against ``allowed-users``, filters the variables again and runs it, staying
behind to forward signals to the process group.  Not setuid, the one
process does all of it and the command runs as the caller.

Each half audits its refusals; the half that starts the command audits
that, with the names of the variables it passes.
"""

from __future__ import annotations

import os
import pwd

from .. import conf as cf
from ..conf.pathcheck import PathError, path_is_secure
from ..sign.kv import KV
from . import audit, creds, helper
from .environ import unsafe_for_root
from .log import die
from .proxy import spawn_and_proxy
from .state import Imp

TYPE_CHECKING = False  # annotations only: typing costs start-up time
if TYPE_CHECKING:
    from typing import NoReturn

_ENV_PREFIX = "IMP_RUN_ENV_"  # privsep keys of the forwarded variables
# flux-core gives these to every prolog and epilog: they pass any pattern list.
_ALWAYS_FORWARDED = ("FLUX_JOB_ID", "FLUX_JOB_USERID")
_NAME_MAX = 128  # longer variable names are skipped, as upstream
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_RLIM_NLIMITS = 16  # Linux's resource limits, RLIMIT_CPU (0) to RLIMIT_RTTIME (15)

def _lookup(imp: Imp, name: str) -> tuple[object, str]:
    """The ``[run.NAME]`` table and its path, absolute and secure."""
    table = cf.get_in(imp.conf.section("run"), name)
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


def _check_user(imp: Imp, table: object, trail: audit.Trail) -> None:
    user = imp.real_user_name()
    if user is None:
        die("Unable to lookup user")
    trail.note(caller=user)
    if not cf.array_contains(cf.get_in(table, "allowed-users"), user):
        die("run: permission denied")


def _forwardable(patterns: object, name: str) -> bool:
    # A name with "=" cannot come from an environment: only a forged message has one.
    if "=" in name or len(name.encode("utf-8", "surrogateescape")) > _NAME_MAX:
        return False
    return name in _ALWAYS_FORWARDED or cf.array_contains_match(patterns, name)


def _put_caller_env(imp: Imp, table: object, kv: KV) -> None:
    """Offer the parent the caller's variables that the patterns allow."""
    # Upstream forwards nothing, not even FLUX_JOB_ID, without the key.
    if not isinstance(table, dict) or "allowed-environment" not in table:
        return
    patterns = table["allowed-environment"]
    for name, value in imp.env.items():
        if _forwardable(patterns, name):
            kv.put_str(_ENV_PREFIX + name, value)


def _command_env(table: object, kv: KV) -> tuple[dict[bytes, bytes], list[str]]:
    """Forwarded variables (re-filtered), then FLUX_OWNER_USERID, HOME, USER,
    PATH; and the names refused as unsafe.

    A put replaces an earlier entry of that name, so a forwarded HOME,
    USER, PATH or FLUX_OWNER_USERID never survives.
    """
    patterns = cf.get_in(table, "allowed-environment")
    opted_in = cf.get_in(table, "allowed-unsafe-environment")
    env, refused = KV(), []
    for name, kind, value in kv.split(_ENV_PREFIX).items():
        if not _forwardable(patterns, name):
            continue
        if unsafe_for_root(name) and not cf.array_contains_match(opted_in, name):
            refused.append(name)
            continue
        env.put_raw(name, kind, value)
    env.put_int("FLUX_OWNER_USERID", os.getuid())
    try:
        target = pwd.getpwuid(os.geteuid())
    except KeyError:
        die("run: failed to find target user")
    env.put_str("HOME", target.pw_dir)
    env.put_str("USER", target.pw_name)
    env.put_str("PATH", _PATH)
    encoded = {name.encode("utf-8", "surrogateescape"): value for name, _, value in env.items()}
    return encoded, refused


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


def _run(imp: Imp, path: str, env: dict[bytes, bytes]) -> NoReturn:
    try:
        os.chdir("/")
    except OSError:
        die("run: failed to chdir to /")
    as_root = imp.setuid

    def exec_command() -> NoReturn:
        if as_root:
            creds.become_root_for_run()
            os.umask(0o022)  # not the caller's: root's files are root's business
        try:
            os.execve(path, [path], env)  # noqa: S606 - argv is [path], no shell wanted
        except OSError as exc:
            die(f"{path}: {exc.strerror}", helper.exec_failure_code(exc))

    spawn_and_proxy(imp, exec_command, signal_group=True)


def _authorize(imp: Imp, table: object, kv: KV, trail: audit.Trail) -> dict[bytes, bytes]:
    """Check the caller; the command's environment.  Audited as allowed."""
    _check_user(imp, table, trail)
    env, refused = _command_env(table, kv)
    trail.note(env=[name.decode("utf-8", "surrogateescape") for name in env],
               env_refused=refused or None)
    if imp.setuid:  # ours now, so the command's: none of the caller's limits
        trail.note(limits_capped=_take_pid1_limits() or None)
    trail.decide("allowed")
    return env


def child(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("run", "unprivileged")
    with trail.refusals():
        name = imp.argv[2] if len(imp.argv) > 2 else ""
        if not name:
            die("run: nothing to run")
        trail.note(command=name)
        table, path = _lookup(imp, name)
        trail.note(path=path)
        kv.put_str("command", name)
        _put_caller_env(imp, table, kv)
        if imp.ps is not None:
            imp.ps.send(kv, "run")
            return  # the parent decides and audits
        env = _authorize(imp, table, kv, trail)  # not setuid: the parent's checks here
    _run(imp, path, env)


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
        table, path = _lookup(imp, name)
        trail.note(path=path)
        env = _authorize(imp, table, kv, trail)
    _run(imp, path, env)
