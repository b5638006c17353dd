"""``flux-imp run NAME``: run a configured command as root (upstream run.c).

flux-core runs its prolog, epilog and housekeeping this way.  The command
is ``run.NAME.path``, run with no arguments, in ``/``, in a process group
of its own, as root, with an environment the IMP builds: the caller's
variables that ``run.NAME.allowed-environment`` lets through, then
FLUX_OWNER_USERID, HOME, USER and PATH.

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

from .. import config as cf
from ..pathcheck import PathError, path_is_secure
from ..sign.kv import KV
from . import audit, creds, helper
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


def _command_env(table: object, kv: KV) -> dict[bytes, bytes]:
    """Forwarded variables (re-filtered), then FLUX_OWNER_USERID, HOME, USER, PATH.

    A put replaces an earlier entry of that name, so a forwarded HOME,
    USER, PATH or FLUX_OWNER_USERID never survives.
    """
    patterns = cf.get_in(table, "allowed-environment")
    env = KV()
    for name, kind, value in kv.split(_ENV_PREFIX).items():
        if _forwardable(patterns, name):
            env.put_raw(name, kind, value)
    env.put_int("FLUX_OWNER_USERID", os.getuid())
    try:
        target = pwd.getpwuid(os.geteuid())
    except KeyError:
        die("run: failed to find target user")
    env.put_str("HOME", target.pw_dir)
    env.put_str("USER", target.pw_name)
    env.put_str("PATH", _PATH)
    return {name.encode("utf-8", "surrogateescape"): value for name, _, value in env.items()}


def _run(imp: Imp, path: str, env: dict[bytes, bytes]) -> NoReturn:
    try:
        os.chdir("/")
    except OSError:
        die("run: failed to chdir to /")
    as_root = imp.setuid

    def exec_command() -> NoReturn:
        if as_root:
            creds.become_root_for_run()
        try:
            os.execve(path, [path], env)  # noqa: S606 - argv is [path], no shell wanted
        except OSError as exc:
            die(f"{path}: {exc.strerror}", helper.exec_failure_code(exc))

    spawn_and_proxy(imp, exec_command, signal_group=True)


def _authorize(imp: Imp, table: object, kv: KV, trail: audit.Trail) -> dict[bytes, bytes]:
    """Check the caller; the command's environment.  Audited as allowed."""
    _check_user(imp, table, trail)
    env = _command_env(table, kv)
    trail.note(env=[name.decode("utf-8", "surrogateescape") for name in env])
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
