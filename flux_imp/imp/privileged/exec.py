"""``flux-imp exec``, the privileged half: runs as root.

Trusts nothing the child sent: reloads the signing config as root, checks
the caller, decodes the message strictly, verifies J again, resolves the
target user from J, refuses root and shells not allowed, waits for the
child, sets up the containment that is configured or requested
(contain/: PAM session, job cgroup and limits, device program, private
/tmp) and only then forks the job shell through proxy.py.  The shell gets
the target's credentials, cwd ``/``, the caller's umask and the caller's
environment without dynamic-loader variables.  Unlike upstream's, it also
gets a session of its own (no controlling terminal: the caller's tty is
out of its reach), a new session keyring (not the caller's) and no file
descriptor but 0, 1 and 2; its parent is still the IMP.  Every decision is
audited (audit.py).
"""

from __future__ import annotations

import os
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
from ..log import die
from ..options import OptionsError

TYPE_CHECKING = False  # annotations only (mypy reads this as true)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from ..state import Imp


_MESSAGE_KEYS = frozenset({"cmd", "J", "shell_path"})


def _is_arg_key(name: str) -> bool:
    """``args<N>``, N decimal without a leading zero (was re ``args(0|[1-9][0-9]*)``)."""
    digits = name[4:]
    return (name.startswith("args") and digits.isascii() and digits.isdigit()
            and (digits == "0" or digits[0] != "0"))


def _leave_callers_session() -> None:
    """A session of its own, without a controlling terminal: the caller's
    tty (the shell's stdio may still be it) then refuses TIOCSTI, so the
    job cannot type commands into the caller's shell."""
    try:
        os.setsid()
    except OSError as exc:
        die(f"exec: setsid: {exc.strerror}")


def parent(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("exec", "privileged")
    with trail.refusals():
        ctx = security_context(imp)  # loaded here, as root, never the child's
        check_caller(imp, trail)
        request = _decode_request(kv)
        note_command(trail, request.argv)
        note_token(trail, request.J)
        target = verify(ctx, request.J, trail)
        if target.pw_uid == 0:
            die("exec: switching to user root not supported")
        if not shell_allowed(imp, request.shell):
            die("exec: shell not in allowed-shells list")
        assert imp.ps is not None
        if not imp.ps.wait():
            trail.decide("refused: unprivileged half failed")
            sys.exit(1)  # the child said why
        environ = _job_environment(imp)
        # Ours, and so the job's: made before PAM opens the session, so that
        # its modules (pam_keyinit, a Kerberos keyring cache) fill this one.
        creds.join_new_session_keyring(target)
        from ..proxy import spawn_and_proxy  # the parent's alone

        job = None
        exec_conf = imp.conf.section("exec")
        if _containment_wanted(exec_conf, request):
            from .contain.setup import Containment

            job = Containment.setup(imp, exec_conf, request.argv[1], request.device,
                                    request.limits, target, trail)
        trail.decide("allowed")

    def exec_child() -> NoReturn:
        if job is not None:
            job.enter()
        creds.become_user(target)
        _leave_callers_session()
        os.umask(imp.umask)
        exec_shell(request.shell, request.argv, environ)

    if job is None:
        spawn_and_proxy(imp, exec_child)
    spawn_and_proxy(imp, exec_child, job_cgroup=job.cgroup, finish=job.finish)


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


def _job_environment(imp: Imp) -> list[bytes]:
    """The caller's environment minus what steers the dynamic loader."""
    if cf.as_bool(exec_conf(imp, "keep-loader-env")):
        return list(imp.env.entries)
    return [entry for entry in imp.env.entries if not _is_loader_variable(entry)]


def _is_loader_variable(entry: bytes) -> bool:
    return steers_loader(entry.partition(b"=")[0].decode("utf-8", "surrogateescape"))
