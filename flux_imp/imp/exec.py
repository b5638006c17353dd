"""``flux-imp exec SHELL ARG...``: start a job shell as the user who signed J.

RFC 15 and upstream's src/imp/exec/exec.c; steps, order and messages are
upstream's (INTEROP.md 4.4).

The unprivileged child (running as the caller) parses everything hostile:
argv, the JSON input (from stdin or ``FLUX_IMP_EXEC_HELPER``), J, options.
It sends the privileged parent one kv message: ``J``, ``shell_path``,
``args0..N``, the device allow-list it resolved (devices.py: paths are
stat'ed with the caller's ids, as upstream) and resource limits.

The privileged parent trusts none of it: it reloads the signing config as
root, checks the caller, decodes the message strictly, verifies J again,
resolves the target user from J, refuses root and shells not allowed,
waits for the child, sets up the containment that is configured or
requested (containment.py: PAM session, job cgroup and limits, device
program, private /tmp) and only then forks the job shell through proxy.py.  The
shell gets the target's credentials, cwd ``/``, the caller's umask and the
caller's environment without dynamic-loader variables.  Unlike upstream's,
it also gets a session of its own (no controlling terminal: the caller's
tty is out of its reach), a new session keyring (not the caller's) and no
file descriptor but 0, 1 and 2; its parent is still the IMP.

Every decision is audited (audit.py).  Not setuid (a test set-up), the
child runs the shell itself if ``allow-unprivileged-exec`` is set.
"""

from __future__ import annotations

import os
import pwd
import sys

from .. import conf as cf
from ..sign import SignError, unwrap
from ..sign.kv import KV
from . import audit, creds, helper, options
from .environ import steers_loader
from .log import die, log
from .options import OptionsError

# Annotations only: re, dataclasses, typing and contextlib would cost both
# halves milliseconds of start-up and the lingering parent memory.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from ..sign import Context
    from .devices import DeviceRules
    from .options import Limits
    from .state import Imp

_MESSAGE_KEYS = frozenset({"cmd", "J", "shell_path"})


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


def _is_arg_key(name: str) -> bool:
    """``args<N>``, N decimal without a leading zero (was re ``args(0|[1-9][0-9]*)``)."""
    digits = name[4:]
    return (name.startswith("args") and digits.isascii() and digits.isdigit()
            and (digits == "0" or digits[0] != "0"))


def _note_command(trail: audit.Trail, argv: list[str]) -> None:
    trail.note(shell=argv[0], args=argv[1:])


def _note_token(trail: audit.Trail, token: str) -> None:
    raw = token.encode("utf-8", "surrogateescape")
    trail.note(J_sha256=audit.sha256_hex(raw))


# ---------------------------------------------------------------- both halves


def _exec_conf(imp: Imp, key: str) -> Any:
    return cf.get_in(imp.conf.section("exec"), key)


def _security_context(imp: Imp) -> Context:
    try:
        return imp.security_context()
    except SignError as exc:
        die(f"exec: Error loading security context: {exc.text}")


def _check_caller(imp: Imp, trail: audit.Trail) -> None:
    """The real user must exist and be in exec.allowed-users."""
    name = imp.real_user_name()
    if name is None:
        die("exec: failed to find IMP user")
    trail.note(caller=name)
    if not cf.array_contains(_exec_conf(imp, "allowed-users"), name):
        die(f"exec: user {name} not in allowed-users list")


def _shell_allowed(imp: Imp, shell: str) -> bool:
    return cf.array_contains(_exec_conf(imp, "allowed-shells"), shell)


def _c_int(value: int) -> int:
    """``(int) value``: the low 32 bits, signed."""
    return (value + 2**31) % 2**32 - 2**31


def _verify(ctx: Context, token: str, trail: audit.Trail) -> pwd.struct_passwd:
    """Verify J (allowed-types enforced); the passwd entry of its signer."""
    try:
        cred = unwrap(ctx, token)
    except SignError as exc:
        die(f"exec: signature validation failed: {exc.text}")
    trail.note(mechanism=cred.mechanism, target_uid=cred.userid)
    try:
        user = pwd.getpwuid(cred.userid & 0xFFFFFFFF)  # a uid_t, as upstream
    except KeyError:
        host = os.uname().nodename or "unknown"
        die(f"exec: userid {_c_int(cred.userid)} is invalid on {host}")
    trail.note(target=user.pw_name, target_uid=user.pw_uid)
    return user


def _exec_shell(shell: str, argv: list[str], environ: list[bytes]) -> NoReturn:
    """cd / and execvp the shell (upstream imp_exec); dies 126/127 on failure."""
    try:
        os.chdir("/")
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
        highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    except (OSError, ValueError):  # no /proc: every descriptor there may be
        highest = os.sysconf("SC_OPEN_MAX") - 1
    os.closerange(3, highest + 1)


def _leave_callers_session() -> None:
    """A session of its own, without a controlling terminal: the caller's
    tty (the shell's stdio may still be it) then refuses TIOCSTI, so the
    job cannot type commands into the caller's shell."""
    try:
        os.setsid()
    except OSError as exc:
        die(f"exec: setsid: {exc.strerror}")


# ----------------------------------------------------------- unprivileged half


def child(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("exec", "unprivileged")
    with trail.refusals():
        request = _child_request(imp, trail)
        if imp.setuid:
            if not _shell_allowed(imp, request.shell):
                die("exec: shell not in allowed-shells")
            _put_request(request, kv)
            assert imp.ps is not None
            imp.ps.send(kv, "exec")
            return  # the parent decides and audits
        if not cf.as_bool(_exec_conf(imp, "allow-unprivileged-exec")):
            die("exec: IMP not installed setuid, operation disabled.")
        log.warn("Running without privilege, userid switching not available")
        trail.decide("allowed")
    os.umask(imp.umask)
    _exec_shell(request.shell, request.argv, imp.env.entries)


def _child_request(imp: Imp, trail: audit.Trail) -> Request:
    from . import jsonin  # the child's alone: the privileged parent never loads it

    ctx = _security_context(imp)
    _check_caller(imp, trail)
    command = imp.env.get("FLUX_IMP_EXEC_HELPER")
    proc = None
    if command is not None:
        if not command:
            die("exec: FLUX_IMP_EXEC_HELPER is empty")
        try:
            proc = helper.Helper.spawn(command, imp.env.entries)  # before the argc check
        except OSError as exc:
            log.warn(f"popen: {exc.strerror}")
            die(f"exec: failed to invoke helper: {command}")
    if len(imp.argv) < 4:
        die("exec: missing arguments to exec subcommand")
    shell, argv = imp.argv[2], imp.argv[2:]
    _note_command(trail, argv)
    data = proc.read_all() if proc is not None else _read_stdin()
    try:
        given = jsonin.parse(data)
    except jsonin.JsonInputError as exc:
        die(f"exec: invalid json input: {exc.text}")
    _note_token(trail, given.J)
    _verify(ctx, given.J, trail)
    try:
        device = options.from_options(given.options)
    except OptionsError as exc:
        die(f"exec: failed to parse device containment policy: {exc.strerror}")
    log.debug(f"device: {device.policy}" if device.contained else "device: allow all")
    rules = None
    if device.contained:
        from . import devices

        rules = devices.resolve(device)  # here, as the caller, never as root
    try:
        limits = options.limits_from_options(given.options)
    except OptionsError as exc:
        die(f"exec: failed to parse resource limits: {exc.strerror}")
    if proc is not None:
        status = proc.wait()
        if status != 0:
            die(f"exec: helper {command} failed with status=0x{status:04x}")
    return Request(shell, argv, given.J, rules, limits)


def _read_stdin() -> bytes:
    from . import jsonin  # the child's alone (see _child_request)

    chunks, size = [], 0
    try:  # not contextlib.suppress: contextlib costs start-up time
        while size <= jsonin.MAX_INPUT and (chunk := os.read(0, 1 << 16)):  # more: refused
            chunks.append(chunk)
            size += len(chunk)
    except OSError:  # a closed stdin reads as empty, like fgetc
        pass
    return b"".join(chunks)


def _put_request(request: Request, kv: KV) -> None:
    kv.put_str("J", request.J)
    kv.put_str("shell_path", request.shell)
    for i, arg in enumerate(request.argv):
        kv.put_str(f"args{i}", arg)
    if request.device is not None:
        from . import devices

        devices.encode(request.device, kv)
    options.encode_limits(request.limits, kv)


# ------------------------------------------------------------- privileged half


def parent(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("exec", "privileged")
    with trail.refusals():
        ctx = _security_context(imp)  # loaded here, as root, never the child's
        _check_caller(imp, trail)
        request = _decode_request(kv)
        _note_command(trail, request.argv)
        _note_token(trail, request.J)
        target = _verify(ctx, request.J, trail)
        if target.pw_uid == 0:
            die("exec: switching to user root not supported")
        if not _shell_allowed(imp, request.shell):
            die("exec: shell not in allowed-shells list")
        assert imp.ps is not None
        if not imp.ps.wait():
            trail.decide("refused: unprivileged half failed")
            sys.exit(1)  # the child said why
        environ = _job_environment(imp)
        # Ours, and so the job's: made before PAM opens the session, so that
        # its modules (pam_keyinit, a Kerberos keyring cache) fill this one.
        creds.join_new_session_keyring(target)
        from .proxy import spawn_and_proxy  # the parent's alone

        job = None
        exec_conf = imp.conf.section("exec")
        if _containment_wanted(exec_conf, request):
            from .containment import Containment

            job = Containment.setup(imp, exec_conf, request.argv[1], request.device,
                                    request.limits, target, trail)
        trail.decide("allowed")

    def exec_child() -> NoReturn:
        if job is not None:
            job.enter()
        creds.become_user(target)
        _leave_callers_session()
        os.umask(imp.umask)
        _exec_shell(request.shell, request.argv, environ)

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
        from . import devices

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
    if cf.as_bool(_exec_conf(imp, "keep-loader-env")):
        return list(imp.env.entries)
    return [entry for entry in imp.env.entries if not _is_loader_variable(entry)]


def _is_loader_variable(entry: bytes) -> bool:
    return steers_loader(entry.partition(b"=")[0].decode("utf-8", "surrogateescape"))
