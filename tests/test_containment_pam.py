"""``exec.pam-support`` (pam.py; upstream t2003-imp-exec-pam.t), as root
through the setuid test build.  The IMP runs in a private mount namespace
where a test directory is bound over /etc/pam.d, so the host's PAM
configuration is never touched."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from flux_imp.imp.privileged.contain import pam

from . import impenv, users
from .containment_helpers import make_setup, outcome, start
from .impenv import ImpInstall
from .jobs import CONFIG, SHELL, ExecSetup, sign_as

# pam_limits starts from PID 1's limits: a hard limit above ours needs
# CAP_SYS_RESOURCE (which containers may lack), so lower the hard one too.
LIMITS = "*     soft    nofile    543\n*     hard    nofile    544\n"


@pytest.fixture
def setup(imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
          world_tmp: Path) -> ExecSetup:
    if pam.load() is None:
        pytest.skip("libpam.so.0 is not installed")
    (world_tmp / "limits.conf").write_text(LIMITS)
    (world_tmp / "pam.d").mkdir()
    # pam_exec runs this at open and at close: the session's life, in order.
    log, hook = world_tmp / "pam.log", world_tmp / "pam-hook"
    log.write_text("")
    os.chmod(log, 0o666)
    hook.write_text(f'#!/bin/sh\necho "$PAM_TYPE $PAM_USER" >>{log}\n')
    os.chmod(hook, 0o755)
    return make_setup(imp.test_build, munged, owner, guest, world_tmp, "pam-support = true\n")


def run_with_stack(setup: ExecSetup, tmp: Path, stack: str,
                   script: str = "ulimit -n") -> tuple[int, str, str]:
    (tmp / "pam.d" / "flux").write_text(stack.format(tmp=tmp))
    return outcome(start(setup, script, tmp, binds={str(tmp / "pam.d"): "/etc/pam.d"}))


GOOD = """\
auth    required pam_localuser.so
session required pam_limits.so conf={tmp}/limits.conf
session optional pam_exec.so {tmp}/pam-hook
"""


def test_version_says_pam(setup: ExecSetup) -> None:
    result = subprocess.run([str(setup.imp), "version"], capture_output=True, check=True,
                            env={"FLUX_IMP_CONFIG_PATTERN": setup.pattern},
                            preexec_fn=users.become(setup.owner))
    assert result.stdout.decode().splitlines()[1:] == ["+pam"]


def test_pam_limits_apply_to_the_shell_and_the_session_closes_after_it(
    setup: ExecSetup, world_tmp: Path
) -> None:
    assert run_with_stack(setup, world_tmp, GOOD, "ulimit -n; ulimit -Hn") == (
        0, "543\n544\n", "")
    user = setup.guest.pw_name
    assert (world_tmp / "pam.log").read_text() == f"open_session {user}\nclose_session {user}\n"


@pytest.mark.parametrize(("stack", "warning"), [
    ("auth required pam_deny.so\n" + GOOD, "pam_setcred: "),
    (GOOD + "session required pam_deny.so\n", "pam_open_session: "),
    ("auth required pam_localuser.so\nsession required pam_no-such-module.so\n",
     "pam_open_session: "),
])  # fmt: skip
def test_pam_failure_stops_the_job(setup: ExecSetup, world_tmp: Path, stack: str,
                                   warning: str) -> None:
    code, out, err = run_with_stack(setup, world_tmp, stack, "echo ran")
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith(f"flux-imp: Warning: {warning}")
    assert lines[-1] == "flux-imp: Fatal: exec: PAM stack failure"


PAM_WRAPPER = Path("/usr/lib/x86_64-linux-gnu/libpam_wrapper.so")


@pytest.mark.parametrize(("stack", "ran"), [
    ("session required pam_permit.so\n", True),
    ("session required pam_deny.so\n", False),
])  # fmt: skip
def test_a_test_build_run_by_root_is_driven_by_pam_wrapper(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, world_tmp: Path,
    stack: str, ran: bool,
) -> None:
    """As upstream's PAM tests: root runs the test build through sudo with
    pam_wrapper preloaded, and the stack in PAM_WRAPPER_SERVICE_DIR is the
    one the IMP's session goes through (not /etc/pam.d)."""
    if pam.load() is None or not PAM_WRAPPER.exists():
        pytest.skip("libpam or pam_wrapper (Debian libpam-wrapper) is not installed")
    services = world_tmp / "services"
    services.mkdir()
    (services / "flux").write_text("auth required pam_permit.so\n" + stack)
    text = "allow-sudo = true\n" + CONFIG.format(
        socket=munged, owner=owner.pw_name, shells=json.dumps([SHELL])) + "pam-support = true\n"
    pattern = impenv.write_config(world_tmp / "conf.d", text)
    token = sign_as(owner, pattern)
    result = impenv.run(
        imp.test_build, ["exec", SHELL, "-c", "echo ran"], stdin=json.dumps({"J": token}).encode(),
        env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern,
             "SUDO_USER": owner.pw_name, "LD_PRELOAD": str(PAM_WRAPPER), "PAM_WRAPPER": "1",
             "PAM_WRAPPER_SERVICE_DIR": str(services)})  # fmt: skip
    if ran:
        assert (result.returncode, result.stdout) == (0, b"ran\n"), result.stderr
    else:
        assert (result.returncode, result.stdout) == (1, b"")
        assert result.stderr.endswith(b"flux-imp: Fatal: exec: PAM stack failure\n")
