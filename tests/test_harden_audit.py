"""Audit records are never lost silently (issue 9, item 12), end to end
through the setuid test build as real users.

Without /dev/log in the IMP's mount namespace, each record goes to the
fallback log /var/log/flux-imp/audit.log (a test directory bound over
/var/log: the host's is never touched), written by the privileged parent,
the child's records handed to it over the privsep-time socket.  With
``audit-required = true`` the command fails closed instead.  Then the
stream syslog socket, unsafe fallback logs, and the relay's hygiene.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flux_imp.imp import audit
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert

from . import impenv, users
from .impenv import ImpInstall
from .jobs import CONFIG, SHELL, ExecSetup, finish, running, sign_as, start_exec
from .signconf import ca_table
from .syslogtrap import (
    AUTHPRIV_NOTICE,
    FallbackLog,
    NoSyslog,
    SyslogTrap,
    fields,
    no_syslog,
    syslog_trap,
)

NO_SYSLOG = "audit-required: cannot log to /dev/log: No such file or directory"


@pytest.fixture
def nolog(world_tmp: Path) -> NoSyslog:
    return no_syslog(world_tmp)


def exec_setup(imp: ImpInstall, munged: str, owner: pwd.struct_passwd,
               guest: pwd.struct_passwd, tmp: Path, *, required: bool = False,
               allowed: bool = True, extra: str = "") -> ExecSetup:
    """The owner may exec /bin/sh for munge-signed J; ``audit-required`` if asked."""
    text = CONFIG.format(socket=munged, owner=owner.pw_name if allowed else "nobody-here",
                         shells=json.dumps([SHELL]))
    head = "audit-required = true\n" if required else ""
    return ExecSetup(imp.test_build, impenv.write_config(tmp / "conf.d", head + text + extra),
                     owner, guest)


def run_exec(setup: ExecSetup, script: str, preexec: Callable[[], None],
             args: tuple[str, ...] = (), token: str | None = None) -> tuple[int, int, str, str]:
    """``exec /bin/sh -c SCRIPT ARGS`` (J: ``token``, or fresh from the guest):
    the IMP's pid, exit status, stdout, stderr."""
    proc = start_exec(setup, ["-c", script, *args], preexec=preexec, token=token)
    with running(proc):
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        code, err = finish(proc)
    return proc.pid, code, out, err


def fields_of(text: str) -> dict[str, str]:
    return fields(text)[1]


def bound_as(log: FallbackLog, user: pwd.struct_passwd) -> Callable[[], None]:
    """A preexec ``then`` (in the trap's namespace): bind ``log``, become ``user``."""
    become = users.become(user)

    def then() -> None:
        log.bind()
        become()

    return then


def owned_by_root_alone(path: Path, mode: int) -> bool:
    st = path.lstat()
    return (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, mode)


# --------------------------------------------------- no syslog: the fallback log


def test_without_syslog_an_allowed_exec_is_recorded_in_the_fallback_log(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, nolog: NoSyslog,
) -> None:  # fmt: skip
    setup = exec_setup(imp, munged, owner, guest, world_tmp)
    pid, code, out, err = run_exec(setup, "echo ran", nolog.preexec(users.become(owner)))
    assert (code, out, err) == (0, "ran\n", "")
    [(writer, text)] = nolog.log.records()
    assert writer == pid  # the privileged parent (the launcher execs Python)
    assert text.startswith('exec half="privileged" ')
    fields = fields_of(text)
    assert (fields["caller"], fields["target"], fields["outcome"]) == (
        f'"{owner.pw_name}"', f'"{guest.pw_name}"', '"allowed"')
    assert owned_by_root_alone(nolog.log.path.parent, 0o700)
    assert owned_by_root_alone(nolog.log.path, 0o600)


def test_without_syslog_the_unprivileged_halfs_refusal_reaches_the_fallback_log(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, nolog: NoSyslog,
) -> None:  # fmt: skip
    """The child cannot write root's log: the parent writes its record, under
    the child's pid as the kernel reports it."""
    setup = exec_setup(imp, munged, owner, guest, world_tmp, allowed=False)
    pid, code, out, err = run_exec(setup, "echo ran", nolog.preexec(users.become(owner)))
    refusal = f"exec: user {owner.pw_name} not in allowed-users list"
    assert (code, out, err) == (1, "", f"flux-imp: Fatal: {refusal}\n")  # upstream's, alone
    [(writer, text)] = nolog.log.records()
    assert writer not in (0, pid)  # the unprivileged child's own pid
    fields = fields_of(text)
    assert (fields["half"], fields["outcome"]) == ('"unprivileged"', f'"refused: {refusal}"')


def test_without_syslog_run_and_casign_are_recorded_in_the_fallback_log(
    imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path, nolog: NoSyslog
) -> None:
    bindir = world_tmp / "bin"
    bindir.mkdir(mode=0o755)
    (bindir / "cmd.sh").write_text("#!/bin/sh\necho ran\n")
    (bindir / "cmd.sh").chmod(0o755)
    table = ca_table(world_tmp)
    authority = CA(table)
    authority.keygen()
    authority.store()
    pattern = impenv.write_config(world_tmp / "conf.d", impenv.toml_table(
        "run.cmd", {"allowed-users": [owner.pw_name], "path": str(bindir / "cmd.sh")})
        + impenv.toml_table("ca", table))
    env = {"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern}
    as_owner = nolog.preexec(users.become(owner))
    ran = impenv.run(imp.test_build, ["run", "cmd"], as_user=as_owner, env=env)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, b"ran\n", b"")
    signed = impenv.run(imp.test_build, ["casign"], as_user=as_owner, env=env,
                        stdin=Cert.create().dumps().encode())
    assert (signed.returncode, signed.stderr) == (0, b""), signed.stderr
    assert [(fields(text)[0], fields_of(text)["half"], fields_of(text)["outcome"])
            for _, text in nolog.log.records()] == [
        ("run", '"privileged"', '"allowed"'), ("casign", '"privileged"', '"allowed"')]


# ------------------------------------------------------------ audit-required


def test_audit_required_without_syslog_exec_fails_closed(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, nolog: NoSyslog,
) -> None:  # fmt: skip
    marker = world_tmp / "the-shell-ran"
    setup = exec_setup(imp, munged, owner, guest, world_tmp, required=True)
    _, code, out, err = run_exec(setup, f"touch {marker}", nolog.preexec(users.become(owner)))
    assert (code, out, err) == (1, "", f"flux-imp: Fatal: {NO_SYSLOG}\n")
    assert not marker.exists()
    [(_, text)] = nolog.log.records()  # the refusal itself is kept
    assert fields_of(text)["outcome"] == f'"refused: {NO_SYSLOG}"'


def test_audit_required_without_syslog_run_and_casign_fail_closed(
    imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path, nolog: NoSyslog
) -> None:
    marker = world_tmp / "the-command-ran"
    bindir = world_tmp / "bin"
    bindir.mkdir(mode=0o755)
    (bindir / "cmd.sh").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (bindir / "cmd.sh").chmod(0o755)
    table = ca_table(world_tmp)
    authority = CA(table)
    authority.keygen()
    authority.store()
    pattern = impenv.write_config(world_tmp / "conf.d", "audit-required = true\n"
        + impenv.toml_table("run.cmd", {"allowed-users": [owner.pw_name],
                                        "path": str(bindir / "cmd.sh")})
        + impenv.toml_table("ca", table))  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern}
    as_owner = nolog.preexec(users.become(owner))
    for args, stdin in ((["run", "cmd"], b""), (["casign"], Cert.create().dumps().encode())):
        result = impenv.run(imp.test_build, args, as_user=as_owner, env=env, stdin=stdin)
        assert (result.returncode, result.stdout, result.stderr.decode()) == (
            1, b"", f"flux-imp: Fatal: {NO_SYSLOG}\n")
    assert not marker.exists()
    assert len(nolog.log.records()) == 2


# A record bigger than any syslog datagram: 64 arguments of 1024 "é",
# each written \xc3\xa9 (8 characters), about 512 KiB.
HUGE_ARGS = ("é" * 1024,) * 64


def test_audit_required_refuses_when_syslog_does_not_take_the_allowed_record(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, syslog: SyslogTrap,
) -> None:  # fmt: skip
    """syslog is there (so neither half refuses up front), but the record
    that would allow the job does not fit: no job, and no "allowed" kept."""
    log = FallbackLog(world_tmp)
    marker = world_tmp / "the-shell-ran"
    setup = exec_setup(imp, munged, owner, guest, world_tmp, required=True)
    preexec = syslog.preexec(bound_as(log, owner))
    _, code, out, err = run_exec(setup, f"touch {marker}", preexec, HUGE_ARGS)
    refusal = "audit-required: cannot log to /dev/log: Message too long"
    assert (code, out, err) == (1, "", f"flux-imp: Fatal: {refusal}\n")
    assert not marker.exists()
    assert syslog.records() == []
    [(_, text)] = log.records()
    assert (fields_of(text)["half"], fields_of(text)["outcome"]) == (
        '"privileged"', f'"refused: {refusal}"')


def test_without_audit_required_a_record_syslog_refuses_goes_to_the_fallback_log(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, syslog: SyslogTrap,
) -> None:  # fmt: skip
    log = FallbackLog(world_tmp)
    setup = exec_setup(imp, munged, owner, guest, world_tmp)
    preexec = syslog.preexec(bound_as(log, owner))
    _, code, out, err = run_exec(setup, "echo ran", preexec, HUGE_ARGS)
    assert (code, out, err) == (0, "ran\n", "")
    assert syslog.records() == []
    [(_, text)] = log.records()
    assert fields_of(text)["outcome"] == '"allowed"'


def test_audit_required_with_syslog_changes_nothing(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, syslog: SyslogTrap,
) -> None:  # fmt: skip
    log = FallbackLog(world_tmp)
    setup = exec_setup(imp, munged, owner, guest, world_tmp, required=True)
    preexec = syslog.preexec(bound_as(log, owner))
    _, code, out, err = run_exec(setup, "echo ran", preexec)
    assert (code, out, err) == (0, "ran\n", "")
    [(priority, text)] = syslog.records()
    assert (priority, fields_of(text)["outcome"]) == (AUTHPRIV_NOTICE, '"allowed"')
    assert not log.path.exists()


# --------------------------------------------------------- a stream /dev/log


@pytest.fixture
def stream_syslog(world_tmp: Path) -> Iterator[SyslogTrap]:
    sub = world_tmp / "stream"
    sub.mkdir(mode=0o755)
    with syslog_trap(sub, socket.SOCK_STREAM) as trap:
        yield trap


def test_a_stream_syslog_socket_gets_the_record_as_glibc_sends_it(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, stream_syslog: SyslogTrap,
) -> None:  # fmt: skip
    """glibc falls back to SOCK_STREAM (EPROTOTYPE) and ends the record with NUL."""
    setup = exec_setup(imp, munged, owner, guest, world_tmp)
    _, code, out, err = run_exec(setup, "echo ran", stream_syslog.preexec(users.become(owner)))
    assert (code, out, err) == (0, "ran\n", "")
    [(priority, text)] = stream_syslog.records()
    assert (priority, fields_of(text)["outcome"]) == (AUTHPRIV_NOTICE, '"allowed"')


# --------------------------------------------------------- unsafe fallback logs


def make_defect(log: FallbackLog, defect: str, owner: pwd.struct_passwd) -> Path:
    """Set up ``defect`` in the fallback directory; a file that must stay empty."""
    directory = log.path.parent
    directory.mkdir(mode=0o700)
    bait = log.var_log / "bait"
    bait.write_text("")
    if defect == "dir-not-roots":
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    elif defect == "dir-writable":
        directory.chmod(0o777)
    elif defect == "dir-symlink":
        directory.rmdir()
        os.symlink(log.var_log, directory)
        return log.var_log / "audit.log"
    elif defect == "log-symlink":
        os.symlink(bait, log.path)
    elif defect == "log-not-roots":
        log.path.write_text("")
        os.chown(log.path, owner.pw_uid, owner.pw_gid)
    elif defect == "log-fifo":
        os.mkfifo(log.path, 0o600)
    elif defect == "log-directory":
        log.path.mkdir()
    return bait


@pytest.mark.parametrize("defect", ["dir-not-roots", "dir-writable", "dir-symlink",
                                    "log-symlink", "log-not-roots", "log-fifo",
                                    "log-directory"])
def test_an_unsafe_fallback_log_is_not_written_and_the_record_goes_to_stderr(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, nolog: NoSyslog, defect: str,
) -> None:  # fmt: skip
    bait = make_defect(nolog.log, defect, owner)
    setup = exec_setup(imp, munged, owner, guest, world_tmp)
    _, code, out, err = run_exec(setup, "echo ran", nolog.preexec(users.become(owner)))
    assert (code, out) == (0, "ran\n")
    [line] = err.splitlines()
    assert line.startswith("flux-imp: Warning: audit: record not logged "
                           "(/var/log/flux-imp/audit.log: ")
    assert line.endswith('outcome="allowed"')
    assert not bait.exists() or bait.read_text() == ""


# ------------------------------------------------------ an IMP not setuid


def test_not_setuid_records_go_to_syslog_only(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, nolog: NoSyslog,
) -> None:  # fmt: skip
    """No privileged half, no fallback: the caller runs the shell as itself."""
    for required in (False, True):
        directory = world_tmp / f"required-{required}"
        directory.mkdir(mode=0o755)
        setup = exec_setup(imp, munged, owner, guest, directory, required=required,
                           extra="allow-unprivileged-exec = true\n")
        setup = ExecSetup(imp.unprivileged, setup.pattern, owner, guest)
        token = sign_as(owner, setup.pattern)  # munge: the caller's own job
        _, code, out, err = run_exec(setup, "echo ran", nolog.preexec(users.become(owner)),
                                     token=token)
        if required:
            assert (code, out, err) == (1, "", f"flux-imp: Fatal: {NO_SYSLOG}\n")
        else:
            assert (code, out, err) == (0, "ran\n", "flux-imp: Warning: Running without "
                                        "privilege, userid switching not available\n")
    assert not nolog.log.path.exists()


# ------------------------------------------------------ the relay, in-process


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """This process as the privileged parent, its fallback log under tmp_path."""
    if os.geteuid() != 0:
        pytest.skip("the parent's side runs as root")
    monkeypatch.setattr(audit, "FALLBACK_DIR", str(tmp_path / "flux-imp"))
    monkeypatch.setattr(audit._State, "relay", None)
    monkeypatch.setattr(audit._State, "required", False)
    audit.configure(False, relay=True)
    yield tmp_path / "flux-imp" / "audit.log"
    assert audit._State.relay is not None
    for end in audit._State.relay:
        end.close()


def send_from_child(data: bytes) -> int:
    """Send ``data`` over the relay from a forked child, as the child would; its pid."""
    assert audit._State.relay is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            audit._State.relay[1].send(data)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_relayed_records_are_one_printable_line_under_the_senders_pid(relay: Path) -> None:
    sender = send_from_child(b'exec half="privileged" outcome="allowed"\n2026 forged\0\xff')
    audit.drain()
    [line] = relay.read_text(encoding="ascii").splitlines()
    assert line.endswith(f' flux-imp[{sender}]: exec half="privileged" outcome="allowed"'
                         "?2026 forged??")


def test_a_relayed_record_is_cut_to_its_bound(relay: Path) -> None:
    send_from_child(b"x" * (2 << 16))
    audit.drain()
    [line] = relay.read_text(encoding="ascii").splitlines()
    assert line.endswith("x" * 100 + "...")
    assert len(line) < (1 << 16) + 100


def test_a_relay_flood_is_drained_a_bounded_number_at_a_time(relay: Path) -> None:
    for _ in range(8):  # max_dgram_qlen may be as low as 10
        send_from_child(b"x")
    audit.drain()
    assert len(relay.read_text().splitlines()) == 8
    audit.drain()  # nothing left: nothing written, no error
    assert len(relay.read_text().splitlines()) == 8


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_fds_a_child_passes_over_the_relay_are_not_kept(relay: Path) -> None:
    """A guard: the credentials fill the control buffer, so the kernel drops
    them today; were it not so, drain() closes them."""
    assert audit._State.relay is not None
    before = open_fds()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            assert audit._State.relay is not None
            end = socket.socket(fileno=os.dup(audit._State.relay[1].fileno()))
            socket.send_fds(end, [b"with fds"], [0, 1, 2])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    audit.drain()
    assert open_fds() == before
    [line] = relay.read_text(encoding="ascii").splitlines()
    assert line.endswith(f"flux-imp[{pid}]: with fds")


def test_a_subprocess_sees_no_log_socket(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, nolog: NoSyslog,
) -> None:  # fmt: skip
    """The relay sockets are close-on-exec: the job inherits none."""
    setup = exec_setup(imp, munged, owner, guest, world_tmp)
    script = "ls -l /proc/$$/fd | grep -c socket: || true"
    _, code, out, err = run_exec(setup, script, nolog.preexec(users.become(owner)))
    assert (code, out, err) == (0, "0\n", "")

