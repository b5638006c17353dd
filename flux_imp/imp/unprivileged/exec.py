"""``flux-imp exec``, the unprivileged half: runs as the caller.

Parses everything hostile: argv, the JSON input (from stdin or the output
of ``FLUX_IMP_EXEC_HELPER``), J, options; resolves DeviceAllow paths with
the caller's ids (as upstream: root never stats them); checks what it can
(exec_rules.py) and sends the privileged parent one message.
"""

from __future__ import annotations

import posix

from ... import conf as cf
from ...sign.kv import KV
from .. import audit, helper, options
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
from ..log import die, log
from ..options import OptionsError

TYPE_CHECKING = False  # annotations only (mypy reads this as true)
if TYPE_CHECKING:
    from ..state import Imp


def child(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("exec", "unprivileged")
    with trail.refusals():
        if imp.setuid:
            put_message(imp, kv, trail)
            assert imp.ps is not None
            imp.ps.send(kv, "exec")
            return  # the parent decides and audits
        request = _child_request(imp, trail)
        if not cf.as_bool(exec_conf(imp.conf, "allow-unprivileged-exec")):
            die("exec: IMP not installed setuid, operation disabled.")
        log.warn("Running without privilege, userid switching not available")
        trail.decide("allowed")
    posix.umask(imp.umask)
    exec_shell(request.shell, request.argv, imp.env.entries)


def put_message(imp: Imp, kv: KV, trail: audit.Trail) -> None:
    """The setuid child's checks, then its message to the parent in ``kv``
    (dies with the IMP's message).  Facts go to ``trail``, nothing is
    recorded: the admin dry run calls this too, then the parent's judge()."""
    request = _child_request(imp, trail)
    if not shell_allowed(imp.conf, request.shell):
        die("exec: shell not in allowed-shells")
    _put_request(request, kv)


def _child_request(imp: Imp, trail: audit.Trail) -> Request:
    from . import jsonin  # the child's alone: the privileged parent never loads it

    ctx = security_context(imp)  # the caller's own load, on code root readied (exec_rules.prepare)
    check_caller(imp.conf, imp.real_user_name(), trail)
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
    note_command(trail, argv)
    data = proc.read_all() if proc is not None else _read_stdin()
    try:
        given = jsonin.parse(data)
    except jsonin.JsonInputError as exc:
        die(f"exec: invalid json input: {exc.text}")
    note_token(trail, given.J)
    verify(ctx, given.J, trail)
    try:
        device = options.from_options(given.options)
    except OptionsError as exc:
        die(f"exec: failed to parse device containment policy: {exc.strerror}")
    log.debug(f"device: {device.policy}" if device.contained else "device: allow all")
    rules = None
    if device.contained:
        from .. import devices

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
        while size <= jsonin.MAX_INPUT and (chunk := posix.read(0, 1 << 16)):  # more: refused
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
        from .. import devices

        devices.encode(request.device, kv)
    options.encode_limits(request.limits, kv)
