"""flux-imp start-up: the short pipeline of upstream's src/imp/imp.c.

launch data -> process name -> IMP config -> log level -> cgroup ->
(privileged) sudo simulation, refuse root, fork the unprivileged child ->
dispatch the command's halves -> exit status.

Every command loads the IMP config first, as upstream's (whose tests fail
``version`` on a bad config), but modules are imported where a step needs
them, so a command pays only for its own steps: ``version`` forks no child
and loads no audit code.
"""

from __future__ import annotations

import gc
import posix
import sys

from ..paths import SYSCONFDIR
from . import commands
from .log import ImpError, die, log

# Annotations only: typing costs start-up time (mypy reads this as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from .environ import CallerEnv
    from .launch import LaunchData
    from .privsep import Privsep
    from .state import Imp

_NAME = b"flux-imp"


def _set_process_name() -> None:
    # flux-core and upstream's tests look for a parent named "flux-imp".
    # Writing our own /proc/self/comm is prctl(PR_SET_NAME) for a
    # single-threaded process, without importing python-prctl.
    try:
        fd = posix.open("/proc/self/comm", posix.O_WRONLY | posix.O_CLOEXEC)
        try:
            if posix.write(fd, _NAME) == len(_NAME):
                return
        finally:
            posix.close(fd)
    except OSError:
        pass  # no /proc: fall back to prctl(2)
    import prctl  # type: ignore[import-untyped, unused-ignore]

    prctl.set_name("flux-imp")


def _child(imp: Imp, ps: Privsep | None) -> None:
    """The unprivileged half: find the command and run its child side."""
    imp.ps = ps
    imp.forget_security_context()
    # Upstream's IMP runs in the caller's cwd, so a relative exec helper (or
    # PATH entry) works.  Only here, with privileges dropped (or never held),
    # so the caller's own permissions decide whether it can go back there;
    # if not (or the cwd is unknown), it stays in "/".  The parent never does.
    if imp.cwd:
        try:  # noqa: SIM105 - contextlib costs start-up time
            posix.chdir(imp.cwd)
        except OSError:
            pass
    if len(imp.argv) < 2:
        die("command required")
    name = imp.argv[1]
    if commands.parent_free(name):
        commands.alone(name)(imp)  # version: no message, so no KV to build
        return
    half = commands.find(name, privileged=False)
    if half is None:
        die(f"Unknown IMP command: {name}")
    from ..sign.kv import KV

    kv = KV()
    kv.put_str("cmd", name)
    half(imp, kv)


def _parent(imp: Imp, ps: Privsep) -> None:
    """The privileged half: act on the child's one message, if any."""
    kv = ps.recv()
    if kv is None:
        return  # nothing to do; the exit status follows the child's
    name = kv.get_str("cmd")
    if name is None:
        die("Failed to read command from privsep child")
    half = commands.find(name, privileged=True)
    if half is not None:
        half(imp, kv)


def _sudo_simulation(imp: Imp) -> None:
    # SUDO_USER only counts when the real uid is root (sudo, or root itself).
    user = imp.env.get("SUDO_USER") if posix.getuid() == 0 else None
    if user is None:
        return
    from .. import conf as cf
    from . import creds

    if not cf.as_bool(imp.conf.section("allow-sudo")):
        die("sudo support not enabled")
    if not creds.simulate_sudo(user):
        die("Failed to enable sudo support")


def _run(test_build: bool, sysconfdir: str, test_pattern: str, proxy: str) -> int:
    from .launch import LaunchDataError, read_launch_data

    try:
        launch = read_launch_data()
    except LaunchDataError as exc:
        die(f"launcher: {exc}")
    _set_process_name()
    from .environ import CallerEnv

    argv = ["flux-imp", *sys.argv[1:]]
    name = argv[1] if len(argv) > 1 else ""  # the command; "": none given
    imp = _state(argv, name, CallerEnv(launch.environ), launch, test_build, sysconfdir,
                 test_pattern, proxy)
    return _dispatch(imp, name)


def _state(argv: list[str], name: str, env: CallerEnv, launch: LaunchData, test_build: bool,
           sysconfdir: str, test_pattern: str, proxy: str) -> Imp:
    """Config, log level, cgroup and (for a command that audits) the audit trail."""
    from .. import conf as cf
    from . import cgroup, impconfig
    from .state import Imp

    if test_build:
        from ..conf.pathcheck import use_test_build_rule

        use_test_build_rule()  # path checks stop at the parent, as upstream's
    conf = impconfig.load(env, test_build, launch.cwd, sysconfdir, test_pattern)
    level = conf.section("log-level")
    if level is not None and not log.set_level(cf.as_str(level)):
        log.warn(f"unknown log-level '{cf.as_str(level)}', ignoring")
    info = cgroup.detect()
    if info is None:
        die("Failed to get current cgroup info")
    imp = Imp(argv, env, conf, info, launch.umask, test_build, cwd=launch.cwd, proxy=proxy)
    if commands.audits(name):
        from . import audit

        audit.configure(cf.as_bool(conf.section("audit-required")), relay=posix.geteuid() == 0)
    return imp


def _dispatch(imp: Imp, name: str) -> int:
    """Not setuid: the child half alone.  Setuid: fork the child, run the
    parent half of command ``name``; one with no parent half just drops
    privilege."""
    if posix.geteuid() != 0:
        _child(imp, None)  # not setuid: the unprivileged half only
        return 0
    _sudo_simulation(imp)
    if posix.getuid() == 0:
        die("Refusing to run as root")
    if commands.parent_free(name):
        # Nothing would run as root: become the caller for good instead of
        # forking a child for the parent to wait on (same output and status).
        from .creds import drop_to_real_ids

        drop_to_real_ids()
        _child(imp, None)
        return 0
    from .privsep import Privsep

    commands.prepare(imp, name)
    ps = Privsep.start(lambda ps: _child(imp, ps))
    imp.ps = ps
    commands.prepare_parent(name)
    _parent(imp, ps)
    return 0 if ps.wait() else 1


def main(test_build: int = 0, sysconfdir: str = SYSCONFDIR, test_pattern: str = "",
         proxy: str = "") -> NoReturn:
    """Entry point; the launcher passes what it was built with (a test
    build, its default config pattern, its lingering helper)."""
    # No cyclic GC: a start allocates thousands of objects and frees few, so
    # collections would only walk them, and after a fork write to pages both
    # halves share (copy-on-write faults in each): 0.35 ms an exec here.
    # The process ends within milliseconds; a Python parent that lingers for
    # a job turns it back on (linger.py).
    gc.disable()
    try:
        code = _run(bool(test_build), sysconfdir, test_pattern, proxy)
    except ImpError as exc:
        log.fatal(exc.message)
        code = exc.code
    audit = sys.modules.get(f"{__package__}.audit")  # loaded by commands that audit
    if audit is not None:
        audit.drain()  # the privileged parent: what the child could not log
    try:
        sys.stdout.flush()
    except OSError:
        code = code or 1
    try:  # noqa: SIM105 - contextlib costs start-up time
        sys.stderr.flush()  # log writes fd 2 directly; anything else, just in case
    except (OSError, ValueError):
        pass
    # Everything is written: skip the interpreter's teardown (freeing every
    # module and object, which costs milliseconds) as the forked halves do.
    # Nothing registers exit handlers that matter (munge's only free memory).
    posix._exit(code)
