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


def lookup(imp: Imp, name: str) -> tuple[object, str]:
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


def check_user(imp: Imp, table: object, trail: audit.Trail) -> None:
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


def put_caller_env(imp: Imp, table: object, kv: KV) -> None:
    """Offer the parent the caller's variables that the patterns allow."""
    # Upstream forwards nothing, not even FLUX_JOB_ID, without the key.
    if not isinstance(table, dict) or "allowed-environment" not in table:
        return
    patterns = table["allowed-environment"]
    for name, value in imp.env.items():
        if _forwardable(patterns, name):
            kv.put_str(_ENV_PREFIX + name, value)


def command_env(table: object, kv: KV) -> tuple[dict[bytes, bytes], list[str]]:
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


def run(imp: Imp, path: str, env: dict[bytes, bytes]) -> NoReturn:
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


def authorize(imp: Imp, table: object, kv: KV, trail: audit.Trail) -> dict[bytes, bytes]:
    """Check the caller; the command's environment (noted in ``trail``)."""
    check_user(imp, table, trail)
    env, refused = command_env(table, kv)
    trail.note(env=[name.decode("utf-8", "surrogateescape") for name in env],
               env_refused=refused or None)
    return env
