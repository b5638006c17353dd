"""``flux-imp run`` as root inherits nothing the caller controls (issue 9):
not its umask, not its resource limits or nice value, and no variable that
steers the dynamic loader, libc or an interpreter, even when
``allowed-environment`` matches it, unless ``allowed-unsafe-environment``
opts it back in.  End to end through the setuid test build, as the
instance owner and under sudo simulation.
"""

from __future__ import annotations

import os
import pwd
import resource
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from flux_imp.imp import audit

from . import impenv
from .impenv import ImpInstall
from .syslogtrap import AUTHPRIV_NOTICE, SyslogTrap
from .test_run import (
    CAP_SYS_RESOURCE,
    Limits,
    RunSetup,
    can,
    forwarded,
    own_limits,
    read_limits,
    root_limits,
    run_logged,
)

# Patterns that match every steering variable the caller sets below.
PATTERNS = ["SAFE_*", "LD_*", "BASH_ENV", "ENV", "BASH_FUNC_*", "PYTHON*", "PERL5*",
            "PERLLIB", "RUBYLIB", "IFS", "SHELLOPTS", "PS4", "NODE_OPTIONS"]  # fmt: skip
# LD_PRELOAD and glibc's other secure-mode names never reach a setuid
# launcher (ld.so unsets them); LD_BIND_NOW and these do.
STEERING = {
    "LD_BIND_NOW": "1", "LD_NOT_GLIBCS": "x", "BASH_ENV": "/tmp/x", "ENV": "/tmp/x",
    "BASH_FUNC_f%%": "() { :; }", "PYTHONPATH": "/tmp", "PYTHONSTARTUP": "/tmp/x",
    "PERL5LIB": "/tmp", "PERL5OPT": "-Mx", "PERLLIB": "/tmp", "RUBYOPT": "-rx",
    "RUBYLIB": "/tmp", "IFS": " ", "SHELLOPTS": "xtrace", "PS4": "$(id)",
    "NODE_OPTIONS": "--require=/tmp/x",
}  # fmt: skip
OPTED_IN = ["PYTHONPATH", "LD_*", "BASH_FUNC_*", "RUBYOPT"]  # RUBYOPT: not in PATTERNS

# Each limit lowered below any sane PID 1's, yet high enough for the IMP
# itself to start.
LOWERED = {
    resource.RLIMIT_CPU: 100, resource.RLIMIT_FSIZE: 1024,
    resource.RLIMIT_DATA: 4 << 30, resource.RLIMIT_STACK: 4 << 20,
    resource.RLIMIT_CORE: 0, resource.RLIMIT_RSS: 1 << 30, resource.RLIMIT_NPROC: 500,
    resource.RLIMIT_NOFILE: 200, resource.RLIMIT_MEMLOCK: 1 << 16,
    resource.RLIMIT_AS: 8 << 30, 10: 100,  # RLIMIT_LOCKS (not in resource)
    resource.RLIMIT_SIGPENDING: 100, resource.RLIMIT_MSGQUEUE: 1000,
    resource.RLIMIT_NICE: 0, resource.RLIMIT_RTPRIO: 0, resource.RLIMIT_RTTIME: 1000000,
}  # fmt: skip
CALLER_NICE = 7

SCRIPTS = {
    "report.sh": "#!/bin/sh\necho Environ:\ntr '\\0' '\\n' </proc/$$/environ\n",
    "limits.sh": "#!/bin/sh\ncat /proc/$$/limits\necho \"nice $(cut -d' ' -f19 /proc/$$/stat)\"\n",
    # 4 KiB into a file root makes: beyond a lowered RLIMIT_FSIZE, mode from the umask.
    "write.sh": "#!/bin/sh\nrm -f \"$0.out\"\nhead -c 4096 /dev/zero >\"$0.out\"\n",
}


def config(owner: pwd.struct_passwd, bindir: Path) -> str:
    commands: dict[str, dict[str, object]] = {
        "env": {"path": f"{bindir}/report.sh", "allowed-environment": PATTERNS},
        "optin": {"path": f"{bindir}/report.sh", "allowed-environment": PATTERNS,
                  "allowed-unsafe-environment": OPTED_IN},
        "limits": {"path": f"{bindir}/limits.sh"},
        "write": {"path": f"{bindir}/write.sh"},
    }  # fmt: skip
    return "allow-sudo = true\n" + "".join(
        impenv.toml_table(f"run.{name}", {"allowed-users": [owner.pw_name], **keys})
        for name, keys in commands.items())


@pytest.fixture(params=[False, True], ids=["setuid", "sudo"])
def setup(request: pytest.FixtureRequest, imp: ImpInstall, owner: pwd.struct_passwd,
          world_tmp: Path) -> RunSetup:  # fmt: skip
    bindir = world_tmp / "bin"
    bindir.mkdir(mode=0o755)
    for name, text in SCRIPTS.items():
        (bindir / name).write_text(text)
        os.chmod(bindir / name, 0o755)
    pattern = impenv.write_config(world_tmp / "conf.d", config(owner, bindir))
    return RunSetup(imp, owner, bindir, bindir, pattern, request.param)


def lowered(which: dict[int, int], hard: bool) -> Limits:
    """Our limits with those in ``which`` lowered (soft, and hard if ``hard``)."""
    limits = own_limits()
    for number, value in which.items():
        name, soft, own = limits[number]
        low = min(v for v in (value, soft, own) if v != -1)
        limits[number] = (name, low, low if hard else own)
    return limits


def hostile(setup: RunSetup, limits: Limits, umask: int = 0o022) -> Callable[[], None]:
    """A preexec_fn: ``umask``, ``limits``, nice raised, then the caller's ids."""
    become = setup.preexec()

    def preexec() -> None:
        os.umask(umask)
        for number, (_, soft, hard) in enumerate(limits):
            resource.setrlimit(number, (soft, hard))
        os.setpriority(os.PRIO_PROCESS, 0, CALLER_NICE)
        if become is not None:
            become()

    return preexec


def limits_and_nice(result: subprocess.CompletedProcess[bytes]) -> tuple[Limits, int]:
    """What limits.sh reports."""
    assert (result.returncode, result.stderr) == (0, b"")
    limits, _, nice = result.stdout.decode().rpartition("nice ")
    return read_limits(limits), int(nice)


def roots_file(setup: RunSetup) -> os.stat_result:
    return os.stat(setup.bin / "write.sh.out")


def capped_record(setup: RunSetup, log: SyslogTrap, limits: Limits
                  ) -> tuple[subprocess.CompletedProcess[bytes], list[str] | None]:  # fmt: skip
    """Run write.sh as a caller with ``limits``: its result, and the limits
    that its audit record names as kept lower (checked)."""
    result = setup.run("write", preexec=log.preexec(hostile(setup, limits)))
    capped = root_limits(limits, CALLER_NICE)[1]
    [(_, record)] = log.records()
    if capped is None:
        assert "limits_capped=" not in record
    else:
        assert f" limits_capped={audit.render(capped)} " in record
    return result, capped


# -- umask and resource limits ---------------------------------------------------------


def test_umask_0_caller_roots_file_is_0644(setup: RunSetup) -> None:
    result = setup.run("write", preexec=hostile(setup, own_limits(), umask=0))
    assert (result.returncode, result.stderr) == (0, b"")
    st = roots_file(setup)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)


def test_ulimit_soft_f_1_caller_root_writes_it_all(setup: RunSetup) -> None:
    # ulimit -S -f 1: 1 KiB, SIGXFSZ beyond (the command gets default signals).
    limits = lowered({resource.RLIMIT_FSIZE: 1024}, hard=False)
    result = setup.run("write", preexec=hostile(setup, limits))
    assert (result.returncode, result.stderr) == (0, b"")
    assert roots_file(setup).st_size == 4096


def test_ulimit_f_1_caller_root_writes_it_all_unless_the_kernel_forbids(
    setup: RunSetup, syslog: SyslogTrap
) -> None:
    # ulimit -f 1 lowers the hard limit too: only CAP_SYS_RESOURCE raises it,
    # and without it (a container) the IMP can but say so in its record.
    limits = lowered({resource.RLIMIT_FSIZE: 1024}, hard=True)
    result, capped = capped_record(setup, syslog, limits)
    if can(CAP_SYS_RESOURCE):
        assert (result.returncode, roots_file(setup).st_size) == (0, 4096)
    else:
        assert capped is not None and "Max file size" in capped
        assert result.returncode == 128 + signal.SIGXFSZ


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_lowered_limits_and_nice_value_are_pid1s_in_root_command(
    setup: RunSetup, hard: bool, syslog: SyslogTrap
) -> None:
    # The audit record goes to the trap: with no syslog here it would go to
    # the host's fallback log, which a hard file-size limit that root cannot
    # raise (no CAP_SYS_RESOURCE) may refuse, with a warning on stderr.
    limits = lowered(LOWERED, hard)
    got = limits_and_nice(setup.run("limits", preexec=syslog.preexec(hostile(setup, limits))))
    assert got == (root_limits(limits, CALLER_NICE)[0], os.getpriority(os.PRIO_PROCESS, 1))


def test_lowered_hard_limits_kept_are_audited(setup: RunSetup, syslog: SyslogTrap) -> None:
    capped_record(setup, syslog, lowered(LOWERED, hard=True))


def test_unprivileged_run_keeps_the_callers_limits(setup: RunSetup) -> None:
    # Not setuid, the command runs as the caller, who could not raise them.
    if setup.sudo:
        pytest.skip("one case is enough")
    limits = lowered(LOWERED, hard=False)
    result = setup.run("limits", preexec=hostile(setup, limits), binary=setup.imp.unprivileged)
    assert limits_and_nice(result) == (limits, CALLER_NICE)


# -- steering variables -------------------------------------------------------


def caller_env() -> dict[str, str]:
    return {"SAFE_VAR": "1", **STEERING}


def test_steering_variables_never_reach_root(setup: RunSetup) -> None:
    assert forwarded(setup.run("env", env=caller_env())) == {"SAFE_VAR": "1"}


def test_opted_in_steering_variables_pass(setup: RunSetup) -> None:
    # RUBYOPT is opted in but not in allowed-environment: that still decides.
    passed = {"SAFE_VAR", "PYTHONPATH", "LD_BIND_NOW", "LD_NOT_GLIBCS", "BASH_FUNC_f%%"}
    got = forwarded(setup.run("optin", env=caller_env()))
    assert got == {name: value for name, value in caller_env().items() if name in passed}


def test_audit_names_the_refused_variables(setup: RunSetup, syslog: SyslogTrap) -> None:
    result, records = run_logged(setup, syslog, "env", env=caller_env())
    assert forwarded(result) == {"SAFE_VAR": "1"}
    refused = [name for name in STEERING if name != "RUBYOPT"]  # caller order
    fields: dict[str, audit.Value] = {
        "half": "privileged", "caller_uid": setup.owner.pw_uid, "command": "env",
        "path": f"{setup.bin}/report.sh", "caller": setup.owner.pw_name,
        "env": ["SAFE_VAR", "FLUX_OWNER_USERID", "HOME", "USER", "PATH"],
        "env_refused": refused,
        "limits_capped": root_limits(own_limits(), os.getpriority(os.PRIO_PROCESS, 0))[1],
    }  # fmt: skip
    assert records == [(AUTHPRIV_NOTICE, audit.format_record("run", "allowed", fields))]


def test_unprivileged_run_refuses_them_too(setup: RunSetup) -> None:
    # One rule whoever runs it, so a test set-up shows what root would get.
    if setup.sudo:
        pytest.skip("one case is enough")
    result = setup.run("env", env=caller_env(), binary=setup.imp.unprivileged)
    assert forwarded(result) == {"SAFE_VAR": "1"}


def test_config_key_is_known(setup: RunSetup) -> None:
    # No "unknown key" warning for allowed-unsafe-environment.
    result = setup.run("optin")
    assert (result.returncode, result.stderr) == (0, b"")

