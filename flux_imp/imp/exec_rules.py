"""What both halves of ``flux-imp exec`` decide alike (RFC 15, upstream's
src/imp/exec/exec.c; INTEROP.md 4.4): the caller check, the allowed shell,
J's verification, and the job request they pass between them.

The unprivileged child (unprivileged/exec.py) parses everything hostile and
sends the privileged parent (privileged/exec.py) one kv message: ``J``,
``shell_path``, ``args0..N``, the device numbers it resolved as the caller
and the resource limits.  The parent trusts none of it and decides again,
as root, with these same functions.  Not setuid (a test set-up), the child
runs the shell itself if ``allow-unprivileged-exec`` is set.
"""

from __future__ import annotations

import posix
import pwd

from .. import conf as cf
from ..sign import SignError, unwrap
from . import audit, helper
from .log import die

# Annotations only: re, dataclasses, typing and contextlib would cost both
# halves milliseconds of start-up and the lingering parent memory.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from ..sign import Context
    from .devices import DeviceRules
    from .impconfig import ImpConfig
    from .options import Limits
    from .state import Imp


class Request:
    """What the child sends and the parent decodes: the job to start."""

    __slots__ = ("J", "argv", "device", "limits", "shell")

    def __init__(self, shell: str, argv: list[str], J: str, device: DeviceRules | None,
                 limits: Limits) -> None:
        self.shell = shell
        self.argv = argv  # the job shell's argv: [SHELL, ARG, ...]
        self.J = J
        self.device = device  # None: no device containment
        self.limits = limits


def note_command(trail: audit.Trail, argv: list[str]) -> None:
    trail.note(shell=argv[0], args=argv[1:])


def note_token(trail: audit.Trail, token: str) -> None:
    raw = token.encode("utf-8", "surrogateescape")
    trail.note(J_sha256=audit.sha256_hex(raw))


def exec_conf(conf: ImpConfig, key: str) -> Any:
    return cf.get_in(conf.section("exec"), key)


def prepare(imp: Imp) -> None:
    """Before the fork (commands.prepare), as root: load the signing context
    from root's config (nothing of the caller's), ready what verifying J
    will need (the mechanisms, curve's CA) and look the caller up, which
    loads the NSS modules.  The parent verifies J with that context; the
    child loads its own as the caller, as upstream's (Imp.forget_security_context),
    but finds the mechanisms imported and initialised.  A failure is left
    for the halves to meet again and report in turn."""
    from ..sign.token import prepare_verify

    imp.real_user_name()
    try:  # noqa: SIM105 - contextlib costs start-up time
        prepare_verify(imp.security_context())
    except SignError:
        pass


def security_context(imp: Imp) -> Context:
    try:
        return imp.security_context()
    except SignError as exc:
        die(f"exec: Error loading security context: {exc.text}")


def check_caller(conf: ImpConfig, name: str | None, trail: audit.Trail) -> None:
    """The real user (``name``, None: no passwd entry) must exist and be in
    exec.allowed-users."""
    if name is None:
        die("exec: failed to find IMP user")
    trail.note(caller=name)
    if not cf.array_contains(exec_conf(conf, "allowed-users"), name):
        die(f"exec: user {name} not in allowed-users list")


def shell_allowed(conf: ImpConfig, shell: str) -> bool:
    return cf.array_contains(exec_conf(conf, "allowed-shells"), shell)


def _c_int(value: int) -> int:
    """``(int) value``: the low 32 bits, signed."""
    return (value + 2**31) % 2**32 - 2**31


def verify(ctx: Context, token: str, trail: audit.Trail) -> pwd.struct_passwd:
    """Verify J (allowed-types enforced); the passwd entry of its signer."""
    try:
        cred = unwrap(ctx, token)
    except SignError as exc:
        die(f"exec: signature validation failed: {exc.text}")
    trail.note(mechanism=cred.mechanism, target_uid=cred.userid)
    try:
        user = pwd.getpwuid(cred.userid & 0xFFFFFFFF)  # a uid_t, as upstream
    except KeyError:
        host = posix.uname().nodename or "unknown"
        die(f"exec: userid {_c_int(cred.userid)} is invalid on {host}")
    trail.note(target=user.pw_name, target_uid=user.pw_uid)
    return user


def exec_shell(shell: str, argv: list[str], environ: list[bytes]) -> NoReturn:
    """cd / and execvp the shell (upstream imp_exec); dies 126/127 on failure."""
    try:
        posix.chdir("/")
    except OSError:
        die("exec: failed to chdir to /")
    helper.default_signals()
    _close_fds_above_stdio()
    err = helper.execvp(shell, argv, environ)
    die(f"{shell}: {err.strerror}", helper.exec_failure_code(err))


def _close_fds_above_stdio() -> None:
    """Only 0, 1 and 2 reach the shell: PAM modules and C libraries may have
    left descriptors open without close-on-exec (Python opens none)."""
    try:
        highest = max(int(name) for name in posix.listdir("/proc/self/fd"))
    except (OSError, ValueError):  # no /proc: every descriptor there may be
        highest = posix.sysconf("SC_OPEN_MAX") - 1
    posix.closerange(3, highest + 1)
