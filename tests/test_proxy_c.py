"""The lingering parent as flux-imp-proxy (packaging/launcher/flux-imp-proxy.c),
end to end through the setuid test build, as real users.

The root Python parent execs the helper once the job runs (proxy.py's
_hand_over): these tests check that the process the job's parent becomes
is the helper, named flux-imp, by default and with a job cgroup; that a
PAM session keeps Python; that signals sent during the hand-over are
still forwarded; and that the job cgroup's "finished" record the helper
sends is the one Python would have (syslog, the fallback log, stderr).
The behaviour both share is tests/test_proxy.py's, run against the helper.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flux_imp.imp.privileged.contain import pam

from . import impenv, users
from .containment_helpers import JOBID, dedicated_cgroup, job_shell, make_setup
from .impenv import ImpInstall
from .jobs import (
    SLEEPER,
    TIMEOUT,
    ExecSetup,
    alive,
    finish,
    in_cgroup,
    ready_line,
    running,
    start_exec,
)
from .syslogtrap import AUTHPRIV_WARNING, NoSyslog, SyslogTrap, no_syslog, syslog_trap
from .test_containment_pam import GOOD, LIMITS


@pytest.fixture
def cgroup_setup(imp: ImpInstall, munged: str, owner: pwd.struct_passwd,
                 guest: pwd.struct_passwd, world_tmp: Path) -> Iterator[tuple[ExecSetup, Path]]:
    """``[exec.cgroup]`` with its parent ``<test cgroup>/jobs``; the IMP runs
    in the test cgroup."""
    with dedicated_cgroup() as top:
        (top / "jobs").mkdir()
        extra = f'[exec.cgroup]\nparent = "{top / "jobs"}"\n'
        yield make_setup(imp.test_build, munged, owner, guest, world_tmp, extra), top


def exe(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/exe")


def becomes(pid: int, path: str) -> bool:
    """True once ``pid`` runs ``path`` (the hand-over follows the fork)."""
    deadline = time.monotonic() + TIMEOUT
    while exe(pid) != path:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def status_uids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        return [int(w) for w in next(ln for ln in f if ln.startswith("Uid:")).split()[1:]]


def then_become(first: Callable[[], None], user: pwd.struct_passwd) -> Callable[[], None]:
    become = users.become(user)

    def preexec() -> None:
        first()
        become()

    return preexec


# -- who lingers -----------------------------------------------------------------


def test_the_lingering_parent_is_the_c_helper_named_flux_imp(
    exec_setup: ExecSetup, imp: ImpInstall
) -> None:
    assert imp.proxy is not None
    with running(start_exec(exec_setup, ["-c", SLEEPER])) as proc:
        shell, parent = ready_line(proc)
        assert parent == proc.pid
        assert becomes(proc.pid, str(imp.proxy))
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "flux-imp\n"
        assert status_uids(proc.pid)[:2] == [exec_setup.owner.pw_uid, 0]
        os.kill(proc.pid, signal.SIGTERM)
        assert finish(proc) == (-signal.SIGTERM, "")
    assert not alive(shell)


# Starts the real helper late: argv and the inherited fds passed on as they are.
_SLOW_HELPER = r"""
#include <time.h>
#include <unistd.h>
int main(int argc, char *argv[])
{
    struct timespec pause = {.tv_sec = 2};
    (void)argc;
    nanosleep(&pause, NULL);
    execv(REAL, argv);
    return 127;
}
"""


def test_the_jobs_parent_is_named_flux_imp_without_waiting_for_the_helper(
    exec_setup: ExecSetup, imp: ImpInstall
) -> None:
    """The helper's file is named flux-imp, so the process is, from the exec
    on, as Python was before it: the job starts without waiting for the
    helper (here slowed by a wrapper of that name, which sleeps 2 s), and
    whoever looks for the job's parent, from the job's first instruction
    on, finds flux-imp."""
    slow = imp.prefix / "slow"  # in the gate, as every setuid test build
    slow.mkdir()
    try:
        launcher = slow / "flux-imp-test"
        helper = impenv.build_launcher(imp.site, launcher, 1)  # with the real helper beside it
        (slow / "real").mkdir(mode=0o755)
        real = helper.rename(slow / "real" / "flux-imp")
        (slow / "slow.c").write_text(_SLOW_HELPER)
        subprocess.run(["gcc", "-O2", f'-DREAL="{real}"', "-o", str(helper),
                        str(slow / "slow.c")], check=True)  # fmt: skip
        os.chmod(helper, 0o755)
        setup = ExecSetup(impenv.make_setuid(launcher), exec_setup.pattern,
                          exec_setup.owner, exec_setup.guest)  # fmt: skip
        with running(start_exec(setup, ["-c", SLEEPER])) as proc:
            _, parent = ready_line(proc)  # the job's first words
            assert Path(f"/proc/{parent}/comm").read_text() == "flux-imp\n"
            assert exe(parent) != str(real)  # not waited for: Python, or the wrapper
            assert becomes(parent, str(real))
            assert Path(f"/proc/{parent}/comm").read_text() == "flux-imp\n"
            os.kill(proc.pid, signal.SIGTERM)
            assert finish(proc) == (-signal.SIGTERM, "")
    finally:
        shutil.rmtree(slow)


def test_with_a_job_cgroup_the_helper_lingers_and_removes_it(
    cgroup_setup: tuple[ExecSetup, Path], imp: ImpInstall
) -> None:
    setup, top = cgroup_setup
    proc = start_exec(setup, [JOBID, "-c", SLEEPER], shell=job_shell(setup),
                      preexec=in_cgroup(top, setup.owner))
    with running(proc):
        shell, _ = ready_line(proc)
        assert becomes(proc.pid, str(imp.proxy))
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "flux-imp\n"
        assert (top / "jobs" / f"imp-shell-{JOBID}" / "cgroup.procs").read_text().split() == [
            str(shell)]
        os.kill(proc.pid, signal.SIGUSR1)
        assert finish(proc) == (-signal.SIGKILL, "")
    assert not (top / "jobs" / f"imp-shell-{JOBID}").exists()


def test_a_pam_session_keeps_python_lingering(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path,
) -> None:  # fmt: skip
    """pam_close_session must run in the process that opened the session."""
    if pam.load() is None:
        pytest.skip("libpam.so.0 is not installed")
    from .containment_helpers import start

    setup = make_setup(imp.test_build, munged, owner, guest, world_tmp, "pam-support = true\n")
    (world_tmp / "limits.conf").write_text(LIMITS)
    (world_tmp / "pam.d").mkdir()
    hook = world_tmp / "pam-hook"
    hook.write_text("#!/bin/sh\ntrue\n")
    os.chmod(hook, 0o755)
    (world_tmp / "pam.d" / "flux").write_text(GOOD.format(tmp=world_tmp))
    proc = start(setup, SLEEPER, world_tmp, binds={str(world_tmp / "pam.d"): "/etc/pam.d"})
    with running(proc):
        ready_line(proc)
        assert exe(proc.pid) == os.path.realpath(sys.executable)  # the launcher's Python
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "flux-imp\n"
        os.kill(proc.pid, signal.SIGTERM)
        assert finish(proc) == (-signal.SIGTERM, "")


def test_a_job_cgroup_path_with_a_control_character_keeps_python_lingering(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path,
) -> None:  # fmt: skip
    """The helper prints the job cgroup's path unscrubbed (rmdir failed):
    Python, whose log.py scrubs, keeps such a job."""
    with dedicated_cgroup() as top:
        parent = top / "jobs\x01"
        parent.mkdir()
        toml_parent = str(parent).replace("\x01", "\\u0001")
        extra = f'[exec.cgroup]\nparent = "{toml_parent}"\n'
        setup = make_setup(imp.test_build, munged, owner, guest, world_tmp, extra)
        proc = start_exec(setup, [JOBID, "-c", SLEEPER], shell=job_shell(setup),
                          preexec=in_cgroup(top, setup.owner))
        with running(proc):
            ready_line(proc)
            (parent / f"imp-shell-{JOBID}" / "busy").mkdir()  # rmdir fails (EBUSY)
            os.kill(proc.pid, signal.SIGUSR1)
            code, err = finish(proc)
    shown = str(parent).replace("\x01", "?")
    assert (code, err) == (-signal.SIGKILL, "flux-imp: Warning: cgroup: cannot remove "
                           f"{shown}/imp-shell-{JOBID}: still busy\n")


# -- the hand-over ------------------------------------------------------------------


def a_child(pid: int, but: int = 0) -> int:
    """A child of ``pid`` other than ``but``, as soon as there is one."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = [int(word) for word in path.read_text().split() if int(word) != but]
        if found:
            return found[0]
    raise AssertionError("no child")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_sent_as_the_job_starts_is_not_lost(
    exec_setup: ExecSetup, sig: signal.Signals
) -> None:
    """Sent the moment the parent has its job child: before, during or just
    after the exec of the helper, it is handled all the same."""
    for _ in range(3):
        with running(start_exec(exec_setup, ["-c", "exec sleep 1000"], stdout=None)) as proc:
            # The privsep child comes first; the job's process is the next fork.
            a_child(proc.pid, but=a_child(proc.pid))
            os.kill(proc.pid, sig)
            expected = -signal.SIGKILL if sig == signal.SIGUSR1 else -sig
            assert finish(proc) == (expected, "")


# -- the job cgroup's audit record ---------------------------------------------------


def expected_finished(allowed: str, removed: str = "yes") -> str:
    """Containment.finish()'s record: the allowed record's fields, then cgroup_removed."""
    head = allowed.removesuffix(' outcome="allowed"')
    assert head != allowed
    return f'{head} cgroup_removed="{removed}" outcome="finished"'


@pytest.fixture
def trap(world_tmp: Path) -> Iterator[SyslogTrap]:
    sub = world_tmp / "trap"
    sub.mkdir(mode=0o755)
    with syslog_trap(sub) as found:
        yield found


def test_the_finished_record_is_sent_to_syslog_as_python_sends_it(
    cgroup_setup: tuple[ExecSetup, Path], trap: SyslogTrap
) -> None:
    setup, top = cgroup_setup
    def enter_cgroup_then_trap() -> None:
        (top / "cgroup.procs").write_text("0")
        trap.enter()

    preexec = then_become(enter_cgroup_then_trap, setup.owner)
    proc = start_exec(setup, [JOBID, "-c", "echo $$"], shell=job_shell(setup), preexec=preexec)
    with running(proc):
        ready_line(proc)
        assert finish(proc) == (0, "")
    raws = trap.raw()
    [allowed] = [r for r in raws if 'half="privileged"' in r and r.endswith('"allowed"')]
    [finished] = [r for r in raws if 'outcome="finished"' in r]
    tail = f"flux-imp[{proc.pid}]: "
    assert finished.startswith(f"<{AUTHPRIV_WARNING}>")  # as record() sends a non-allowed one
    assert finished.endswith(tail + expected_finished(allowed.split(tail, 1)[1]))


@pytest.fixture
def nolog(world_tmp: Path) -> NoSyslog:
    return no_syslog(world_tmp)


def run_cgroup_job(setup: ExecSetup, top: Path, nolog: NoSyslog) -> tuple[int, int, str]:
    def enter() -> None:
        (top / "cgroup.procs").write_text("0")
        nolog.enter()

    proc = start_exec(setup, [JOBID, "-c", "echo $$"], shell=job_shell(setup),
                      preexec=then_become(enter, setup.owner))
    with running(proc):
        ready_line(proc)
        code, err = finish(proc)
    return proc.pid, code, err


def test_without_syslog_the_finished_record_goes_to_the_fallback_log(
    cgroup_setup: tuple[ExecSetup, Path], nolog: NoSyslog
) -> None:
    setup, top = cgroup_setup
    pid, code, err = run_cgroup_job(setup, top, nolog)
    assert (code, err) == (0, "")
    ours = [(w, t) for w, t in nolog.log.records() if t.startswith('exec half="privileged"')]
    [(_, allowed), (writer, finished)] = ours
    assert writer == pid
    assert finished == expected_finished(allowed)


@pytest.mark.parametrize(("defect", "why"), [
    ("fifo", "No such device or address"),  # O_NONBLOCK: ENXIO, not a hang
    ("not-roots", "audit.log not owned by root, or writable by group or others"),
])  # fmt: skip
def test_an_unsafe_fallback_log_sends_the_finished_record_to_stderr(
    cgroup_setup: tuple[ExecSetup, Path], nolog: NoSyslog, defect: str, why: str
) -> None:
    setup, top = cgroup_setup
    nolog.log.path.parent.mkdir(mode=0o700)
    if defect == "fifo":
        os.mkfifo(nolog.log.path, 0o600)
    else:
        nolog.log.path.write_text("")
        os.chown(nolog.log.path, setup.owner.pw_uid, setup.owner.pw_gid)
    _, code, err = run_cgroup_job(setup, top, nolog)
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 2  # the allowed record (Python), then the finished one (the helper)
    head = f"flux-imp: Warning: audit: record not logged (/var/log/flux-imp/audit.log: {why}): "
    assert all(line.startswith(head) for line in lines)
    allowed, finished = (line[len(head):].split(": ", 1)[1] for line in lines)
    assert finished == expected_finished(allowed)


# -- the helper alone ----------------------------------------------------------------


def test_the_helper_refuses_arguments_it_was_not_given_by_the_imp(imp: ImpInstall) -> None:
    assert imp.proxy is not None
    for argv in ([], ["1"] * 15, ["0", "0", "0", "0", "", "", "1", "0", "-", "0", "0", "/dev/log",
                                  "/x", "y", "84"]):
        result = subprocess.run([str(imp.proxy), *argv], capture_output=True, check=False)
        assert result.returncode == 1
        assert result.stderr.startswith(b"flux-imp: Fatal: proxy: ")
