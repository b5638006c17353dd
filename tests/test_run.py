"""``flux-imp run NAME`` (upstream t2002-imp-run.t, INTEROP.md 4.5, 4.6)
end to end through the setuid test build, as a real instance owner and
under sudo simulation; plus our group identity and the audit records.

The configured command is a script that reports its ids, process group
and exact initial environment (from /proc), so tests see what the IMP
passed to execve, not what a shell made of it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flux_imp.imp import audit

from . import impenv, users
from .impenv import ImpInstall
from .jobs import TIMEOUT, alive, exits, finish, in_cgroup, ready_line, running
from .syslogtrap import AUTHPRIV_NOTICE, AUTHPRIV_WARNING, SyslogTrap

ROOT = pwd.getpwuid(0)
FIXED_PATH = b"PATH=/usr/sbin:/usr/bin:/sbin:/bin"
# Prints "Key: value" lines, then "Environ:" and the environment as execve gave it.
REPORT = r"""#!/bin/sh
grep -E '^(Uid|Gid|Groups):' /proc/$$/status
echo "Pid: $$"
echo "Pgid: $(cut -d' ' -f5 /proc/$$/stat)"
echo "Cwd: $(readlink /proc/$$/cwd)"
echo "Environ:"
tr '\0' '\n' </proc/$$/environ
"""
SCRIPTS = {
    "report.sh": REPORT,
    # "<pid> <parent>" when running, then a sleep in the foreground ...
    "sleep.sh": "#!/bin/sh\necho $$ $PPID\nexec sleep 1000\n",
    # ... or in the background, in the same process group: "<sh> <parent> <sleep>".
    "group.sh": "#!/bin/sh\nsleep 1000 &\necho $$ $PPID $!\nwait\n",
}


def config(owner: pwd.struct_passwd, bindir: Path, checked: Path) -> str:
    """The IMP config: a [run.NAME] table a case, each allowing only the
    owner unless it says otherwise."""
    report = f"{bindir}/report.sh"
    commands: dict[str, dict[str, Any]] = {
        "test": {"allowed-environment": ["TEST_*", "EXACT_MATCH"], "path": report},
        "verified": {"allowed-environment": ["FOO*", "HOME"], "path": report},
        "noenv": {"path": report},
        "nopath": {},
        "noexec": {"path": f"{bindir}/noexec.sh"},
        "badpath": {"path": "report.sh"},  # relative
        "notallowed": {"allowed-users": [], "path": report},
        "allowednotset": {"allowed-users": None, "path": report},
        "sleep": {"path": f"{bindir}/sleep.sh"},
        "group": {"path": f"{bindir}/group.sh"},
        "checked": {"path": f"{checked}/report.sh"},
    }
    return "allow-sudo = true\n" + "".join(
        impenv.toml_table(f"run.{name}", {"allowed-users": [owner.pw_name], **keys})
        for name, keys in commands.items())


@dataclass(frozen=True)
class RunSetup:
    imp: ImpInstall
    owner: pwd.struct_passwd
    bin: Path  # the configured commands, root-owned
    checked: Path  # a directory of its own for run.checked, for path-check tests
    pattern: str
    sudo: bool  # run as root with SUDO_USER=owner instead of as the owner

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": "/usr/bin:/bin", **(extra or {}), "FLUX_IMP_CONFIG_PATTERN": self.pattern}
        if self.sudo:
            env["SUDO_USER"] = self.owner.pw_name
        return env

    def preexec(self) -> Callable[[], None] | None:
        return None if self.sudo else users.become(self.owner)

    def argv(self, *args: str, binary: Path | None = None) -> list[str]:
        return [str(binary or self.imp.test_build), "run", *args]

    def run(self, *args: str, env: Mapping[str, str] | None = None, binary: Path | None = None,
            preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.argv(*args, binary=binary), env=self.env(env),
                              preexec_fn=preexec or self.preexec(), capture_output=True,
                              cwd="/", timeout=60, check=False)  # fmt: skip

    def start(self, name: str, *, preexec: Callable[[], None] | None = None
              ) -> subprocess.Popen[bytes]:  # fmt: skip
        return subprocess.Popen(self.argv(name), env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=preexec or self.preexec(),
                                cwd="/")  # fmt: skip


def make_setup(imp: ImpInstall, owner: pwd.struct_passwd, top: Path, sudo: bool) -> RunSetup:
    bindir, checked = top / "bin", top / "checked"
    for directory in (bindir, checked):
        directory.mkdir(mode=0o755)
    files = {bindir / name: (text, 0o755) for name, text in SCRIPTS.items()}
    files[checked / "report.sh"] = (REPORT, 0o755)
    files[bindir / "noexec.sh"] = (REPORT, 0o600)  # secure, but not executable even by root
    for path, (text, mode) in files.items():
        path.write_text(text)
        os.chmod(path, mode)
    pattern = impenv.write_config(top / "conf.d", config(owner, bindir, checked))
    return RunSetup(imp, owner, bindir, checked, pattern, sudo)


@pytest.fixture(params=[False, True], ids=["setuid", "sudo"])
def setup(request: pytest.FixtureRequest, imp: ImpInstall, owner: pwd.struct_passwd,
          world_tmp: Path) -> RunSetup:  # fmt: skip
    return make_setup(imp, owner, world_tmp, request.param)


@pytest.fixture
def setuid(imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path) -> RunSetup:
    return make_setup(imp, owner, world_tmp, False)


@dataclass(frozen=True)
class Report:
    fields: dict[str, str]
    environ: list[bytes]

    def ids(self, key: str) -> list[int]:
        return [int(word) for word in self.fields[key].split()]

    def env(self) -> dict[bytes, bytes]:
        return dict(entry.split(b"=", 1) for entry in self.environ)


def report(result: subprocess.CompletedProcess[bytes]) -> Report:
    assert (result.returncode, result.stderr) == (0, b"")
    head, _, environ = result.stdout.partition(b"Environ:\n")
    fields = dict(line.split(":", 1) for line in head.decode().splitlines())
    return Report({k: v.strip() for k, v in fields.items()}, environ.splitlines())


def fatal(result: subprocess.CompletedProcess[bytes], message: str, code: int = 1) -> None:
    assert (result.returncode, result.stderr.decode()) == (code, f"flux-imp: Fatal: {message}\n")
    assert result.stdout == b""


# -- refusals (upstream's failure-tests.txt, in both modes) ----------------


@pytest.mark.parametrize("args", [[], [""]], ids=["no-name", "empty-name"])
def test_nothing_to_run(setup: RunSetup, args: list[str]) -> None:
    fatal(setup.run(*args), "run: nothing to run")


@pytest.mark.parametrize(("name", "message"), [
    ("nocommand", "run: nocommand: no configuration found"),
    ("nopath", "run: nopath: path is missing or invalid"),
    ("badpath", "run: badpath: path is missing or invalid"),  # relative
    ("notallowed", "run: permission denied"),
    ("allowednotset", "run: permission denied"),
])  # fmt: skip
def test_run_must_fail(setup: RunSetup, name: str, message: str) -> None:
    fatal(setup.run(name, "extra", "args"), message)


def test_caller_without_passwd_entry(setuid: RunSetup) -> None:
    def known(uid: int) -> bool:
        with contextlib.suppress(KeyError):
            return bool(pwd.getpwuid(uid))
        return False

    uid = next(uid for uid in range(54321, 60000) if not known(uid))
    with setuid.imp.gate.admitted(uid):  # the test builds' directory is closed to others
        fatal(setuid.run("test", preexec=users.with_ids(uid, uid, [])), "Unable to lookup user")


def test_path_not_executable(setup: RunSetup) -> None:
    fatal(setup.run("noexec"), f"{setup.bin}/noexec.sh: Permission denied", 126)


def _chown(user: pwd.struct_passwd) -> Callable[[Path], None]:
    return lambda path: os.chown(path, user.pw_uid, -1)


def _chmod(mode: int) -> Callable[[Path], None]:
    return lambda path: os.chmod(path, mode)


def _symlink(path: Path) -> None:
    real = path.with_name("real.sh")
    path.rename(real)
    path.symlink_to(real)


@pytest.mark.parametrize(("target", "change", "text"), [
    ("file", "guest", "insecure file ownership"),
    # The owner passes the child's check (its own file): root's check refuses.
    ("file", "owner", "insecure file ownership"),
    ("file", _chmod(0o775), "bad file permissions (0775)"),
    ("file", _chmod(0o757), "bad file permissions (0757)"),
    ("file", _symlink, "symbolic link"),
    ("dir", "owner", "Invalid ownership on parent directory"),
    ("dir", _chmod(0o777), "parent directory is world-writable without sticky bit"),
])  # fmt: skip
def test_insecure_path(setup: RunSetup, guest: pwd.struct_passwd, target: str,
                       change: str | Callable[[Path], None], text: str) -> None:  # fmt: skip
    path = setup.checked / "report.sh"
    if isinstance(change, str):
        change = _chown(setup.owner if change == "owner" else guest)
    change(path if target == "file" else setup.checked)
    fatal(setup.run("checked"), f"run: {path}: {text}")


def test_secure_path_runs(setup: RunSetup) -> None:
    report(setup.run("checked"))  # the baseline of test_insecure_path


# -- the command's process -------------------------------------------------


def test_runs_as_root_in_its_own_group(setup: RunSetup) -> None:
    got = report(setup.run("test"))
    assert got.ids("Uid") == [0, 0, 0, 0]
    assert got.fields["Pgid"] == got.fields["Pid"]
    assert got.fields["Cwd"] == "/"


def test_group_identity_is_roots(setup: RunSetup) -> None:
    # Upstream keeps the caller's egid and groups in a setuid install; we
    # give the command root's gid and groups (initgroups("root", 0)).
    extra_group = 4242
    owner = setup.owner
    caller = users.with_ids(0, 0, [extra_group]) if setup.sudo else users.with_ids(
        owner.pw_uid, owner.pw_gid, [owner.pw_gid, extra_group])  # fmt: skip
    got = report(setup.run("test", preexec=caller))
    assert got.ids("Gid") == [0, 0, 0, 0]
    assert set(got.ids("Groups")) == set(os.getgrouplist("root", 0))
    assert extra_group not in got.ids("Groups")


def test_owner_userid_home_user_and_path(setup: RunSetup) -> None:
    env = report(setup.run("test")).env()
    assert env[b"FLUX_OWNER_USERID"] == str(setup.owner.pw_uid).encode()
    assert (env[b"HOME"], env[b"USER"]) == (ROOT.pw_dir.encode(), b"root")
    assert b"PATH=" + env[b"PATH"] == FIXED_PATH


def test_verified_environment_exactly(setup: RunSetup) -> None:
    # INTEROP.md 4.5 "Verified"; FLUX_JOB_ID is an f58 id with UTF-8 "ƒ".
    caller = {"FOO1": "a", "FLUX_JOB_ID": "ƒ1", "BAR": "1", "HOME": "/x", "PATH": "/bad"}
    got = report(setup.run("verified", env=caller))
    assert got.environ == [
        b"FOO1=a",
        "FLUX_JOB_ID=ƒ1".encode(),
        f"FLUX_OWNER_USERID={setup.owner.pw_uid}".encode(),
        f"HOME={ROOT.pw_dir}".encode(),
        b"USER=root",
        FIXED_PATH,
    ]


def forwarded(result: subprocess.CompletedProcess[bytes]) -> dict[str, str]:
    """The variables the command got from the caller (not those the IMP sets)."""
    env = {k.decode(): v.decode() for k, v in report(result).env().items()}
    for name in ("FLUX_OWNER_USERID", "HOME", "USER", "PATH"):
        del env[name]
    return env


def test_environment_filtered_by_patterns(setup: RunSetup) -> None:
    longest, too_long = "TEST_" + "L" * 123, "TEST_" + "L" * 124  # 128 and 129 bytes
    caller = {"TEST_VAR": "foo", "TEST_VAR_BAR": "xxx", "EXACT_MATCH": "yes",
              "EXACT_MATCH_BAD": "xxx", "FOO": "bar", "FLUX_JOB_ID": "1234",
              "FLUX_JOB_USERID": "42", longest: "x", too_long: "x"}  # fmt: skip
    assert forwarded(setup.run("test", env=caller)) == {
        "TEST_VAR": "foo", "TEST_VAR_BAR": "xxx", "EXACT_MATCH": "yes",
        "FLUX_JOB_ID": "1234", "FLUX_JOB_USERID": "42", longest: "x",
    }  # fmt: skip


def test_no_allowed_environment_forwards_nothing(setup: RunSetup) -> None:
    # As upstream (INTEROP.md 6): not even FLUX_JOB_ID without the key.
    caller = {"FLUX_JOB_ID": "1234", "FLUX_JOB_USERID": "42", "TEST_VAR": "foo"}
    assert forwarded(setup.run("noenv", env=caller)) == {}


# -- not setuid: the command runs as the caller ------------------------------


def test_unprivileged_runs_as_the_caller(setuid: RunSetup) -> None:
    owner = setuid.owner
    got = report(setuid.run("verified", env={"FLUX_JOB_ID": "ƒ1"}, binary=setuid.imp.unprivileged))
    assert got.ids("Uid") == [owner.pw_uid] * 4
    assert got.ids("Gid") == [owner.pw_gid] * 4
    assert got.environ == [
        "FLUX_JOB_ID=ƒ1".encode(),
        f"FLUX_OWNER_USERID={owner.pw_uid}".encode(),
        f"HOME={owner.pw_dir}".encode(),
        f"USER={owner.pw_name}".encode(),
        FIXED_PATH,
    ]


def test_unprivileged_checks_the_user(setuid: RunSetup) -> None:
    fatal(setuid.run("notallowed", binary=setuid.imp.unprivileged), "run: permission denied")


# -- the lingering IMP: signals and exit status ------------------------------


def test_exit_status_is_the_commands(setup: RunSetup) -> None:
    (setup.bin / "sleep.sh").write_text("#!/bin/sh\nexit 3\n")
    result = setup.run("sleep")
    assert (result.returncode, result.stderr) == (3, b"")


def test_imp_lingers_as_the_commands_parent(setup: RunSetup) -> None:
    with running(setup.start("sleep")) as proc:
        _, parent = ready_line(proc)
        assert parent == proc.pid
        assert Path(f"/proc/{parent}/comm").read_text() == "flux-imp\n"
        os.kill(proc.pid, signal.SIGTERM)
        assert finish(proc) == (-signal.SIGTERM, "")


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_forwarded_and_shell_sees_128_plus_n(
    setup: RunSetup, sig: signal.Signals, status: int
) -> None:
    # As upstream's test: a shell runs the IMP and reports its status.
    wrapper = ["/bin/sh", "-c", '"$@"; echo "status $?"', "sh", *setup.argv("sleep")]
    proc = subprocess.Popen(wrapper, env=setup.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=setup.preexec(), cwd="/")
    with running(proc):
        command, imp_pid = ready_line(proc)
        os.kill(imp_pid, sig)
        out, _ = proc.communicate(timeout=TIMEOUT)  # stderr: the shell's "Terminated"
    assert out == f"status {status}\n".encode()
    assert not alive(command)


@pytest.mark.parametrize(("sig", "status"), [
    (signal.SIGTERM, -signal.SIGTERM),
    # Not in cgroup-kill mode: the IMP SIGKILLs its child and the child's group.
    (signal.SIGUSR1, -signal.SIGKILL),
], ids=["SIGTERM", "SIGUSR1"])  # fmt: skip
def test_signals_go_to_the_process_group(
    setup: RunSetup, sig: signal.Signals, status: int
) -> None:
    with running(setup.start("group")) as proc:
        command, _, background = ready_line(proc)
        assert os.getpgid(background) == command
        os.kill(proc.pid, sig)
        assert finish(proc) == (status, "")
    assert not alive(command)
    assert exits(background)  # not the IMP's child: it may still be dying


def test_sigusr1_sigkills_the_command(setup: RunSetup) -> None:
    with running(setup.start("sleep")) as proc:
        command, _ = ready_line(proc)
        os.kill(proc.pid, signal.SIGUSR1)
        assert finish(proc) == (-signal.SIGKILL, "")
    assert not alive(command)


def test_sigusr1_sigkills_the_process_group_in_cgroup_kill_mode(
    setuid: RunSetup, job_cgroup: Path
) -> None:
    with running(setuid.start("group", preexec=in_cgroup(job_cgroup, setuid.owner))) as proc:
        command, _, background = ready_line(proc)
        os.kill(proc.pid, signal.SIGUSR1)
        assert finish(proc) == (-signal.SIGKILL, "")
    assert not alive(command)
    assert exits(background)


# -- what root's command inherits: limits (tests/test_harden_run.py) ----------

CAP_SYS_NICE, CAP_SYS_RESOURCE = 23, 24
Limits = list[tuple[str, int, int]]  # (name, soft, hard) by RLIMIT_ number; -1 unlimited


def read_limits(text: str) -> Limits:
    """A /proc/PID/limits text as a list."""
    def value(word: str) -> int:
        return -1 if word == "unlimited" else int(word)

    rows = [(row[:25].rstrip(), row[25:].split()) for row in text.splitlines()[1:]]
    return [(name, value(words[0]), value(words[1])) for name, words in rows]


def can(capability: int) -> bool:
    """Is ``capability`` in our bounding set, so a setuid-root IMP has it?"""
    with open("/proc/self/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return bool(mask >> capability & 1)


def _at_most(value: int, limit: int) -> bool:
    return limit == -1 or (value != -1 and value <= limit)


def root_limits(caller: Limits, caller_nice: int) -> tuple[Limits, list[str] | None]:
    """The limits root's command gets when the caller has ``caller`` and
    ``caller_nice``, and the names the IMP audits as kept lower: PID 1's,
    as far as the kernel lets the IMP raise the caller's hard limits."""
    pid1 = read_limits(Path("/proc/1/limits").read_text())
    got, capped = [], []
    for (name, soft, hard), (_, _, own) in zip(pid1, caller):
        if can(CAP_SYS_RESOURCE) or _at_most(hard, own):
            got.append((name, soft, hard))
        else:
            got.append((name, soft if _at_most(soft, own) else own, own))
            capped.append(name)
    if not can(CAP_SYS_NICE) and os.getpriority(os.PRIO_PROCESS, 1) < caller_nice:
        capped.append("nice value")
    return got, capped or None


def own_limits() -> Limits:
    return read_limits(Path("/proc/self/limits").read_text())


# -- audit records -----------------------------------------------------------

def run_logged(setup: RunSetup, log: SyslogTrap, *args: str, binary: Path | None = None,
               env: Mapping[str, str] | None = None,
               ) -> tuple[subprocess.CompletedProcess[bytes], list[tuple[int, str]]]:  # fmt: skip
    """``flux-imp run ARGS`` as the set-up's caller; its result and audit records."""
    result = setup.run(*args, env=env, binary=binary, preexec=log.preexec(setup.preexec()))
    return result, log.records()


def test_audit_refusal_by_the_unprivileged_half(setuid: RunSetup, syslog: SyslogTrap) -> None:
    result, records = run_logged(setuid, syslog, "nocommand")
    fatal(result, "run: nocommand: no configuration found")
    fields: dict[str, audit.Value] = {"half": "unprivileged", "caller_uid": setuid.owner.pw_uid,
                                      "command": "nocommand"}  # fmt: skip
    reason = "refused: run: nocommand: no configuration found"
    assert records == [(AUTHPRIV_WARNING, audit.format_record("run", reason, fields))]


def denied(setup: RunSetup, half: str) -> list[tuple[int, str]]:
    """The records of ``run notallowed`` refused by ``half``."""
    fields: dict[str, audit.Value] = {
        "half": half, "caller_uid": setup.owner.pw_uid, "command": "notallowed",
        "path": f"{setup.bin}/report.sh", "caller": setup.owner.pw_name}  # fmt: skip
    outcome = "refused: run: permission denied"
    return [(AUTHPRIV_WARNING, audit.format_record("run", outcome, fields))]


def test_audit_refusal_by_the_privileged_half(setup: RunSetup, syslog: SyslogTrap) -> None:
    result, records = run_logged(setup, syslog, "notallowed")
    fatal(result, "run: permission denied")
    assert records == denied(setup, "privileged")


def test_audit_allowed_with_the_variables_passed(setup: RunSetup, syslog: SyslogTrap) -> None:
    result, records = run_logged(setup, syslog, "verified", env={"FOO1": "a", "BAR": "b"})
    assert report(result).environ[0] == b"FOO1=a"
    fields: dict[str, audit.Value] = {
        "half": "privileged", "caller_uid": setup.owner.pw_uid, "command": "verified",
        "path": f"{setup.bin}/report.sh", "caller": setup.owner.pw_name,
        "env": ["FOO1", "FLUX_OWNER_USERID", "HOME", "USER", "PATH"],
        # Any of our limits that the IMP cannot raise to PID 1's (no CAP_SYS_RESOURCE).
        "limits_capped": root_limits(own_limits(), os.getpriority(os.PRIO_PROCESS, 0))[1],
    }  # fmt: skip
    assert records == [(AUTHPRIV_NOTICE, audit.format_record("run", "allowed", fields))]


def test_audit_unprivileged_mode(setuid: RunSetup, syslog: SyslogTrap) -> None:
    result, records = run_logged(setuid, syslog, "notallowed", binary=setuid.imp.unprivileged)
    fatal(result, "run: permission denied")
    assert records == denied(setuid, "unprivileged")
