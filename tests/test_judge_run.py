"""``run``'s judgement, as a function: run_rules.judge() from the request,
the config and the caller to a RunPlan or upstream's refusal, in upstream's
order of checks, with the audit notes it leaves.  No root, no fork, no
launcher: what an admin dry run calls.
"""

from __future__ import annotations

import json
import os
import posix
import pwd
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from flux_imp.imp import audit, run_rules
from flux_imp.imp.impconfig import ImpConfig
from flux_imp.imp.run_rules import RunPlan, RunRequest, judge
from flux_imp.imp.verdict import Caller, Refusal
from flux_imp.sign.kv import KV

PATH = "/usr/bin/true"  # root's, in root's directories: secure for anyone
ME = pwd.getpwuid(os.getuid())
CALLER = Caller(1001, 1002, ME.pw_name, 0o077)
ROOT = pwd.getpwuid(0)


def conf(**commands: dict[str, object]) -> ImpConfig:
    return ImpConfig({"run": commands}, None, 0)


def allowed(**extra: object) -> dict[str, object]:
    return {"path": PATH, "allowed-users": [ME.pw_name], **extra}


def request(command: str | None = "cmd", **env: str) -> RunRequest:
    raw = [(name, "s", value.encode("utf-8", "surrogateescape")) for name, value in env.items()]
    return RunRequest(command, raw)


def judged(config: ImpConfig, req: RunRequest, caller: Caller = CALLER,
           target_uid: int = 0) -> tuple[RunPlan | Refusal, dict[str, audit.Value]]:  # fmt: skip
    """The verdict, and the notes it left beyond the trail's own fields."""
    notes = audit.Trail("run", "privileged")
    verdict = judge(req, config, caller, notes, target_uid=target_uid)
    return verdict, {k: v for k, v in notes.fields.items() if k not in ("half", "caller_uid")}


def plan_of(config: ImpConfig, req: RunRequest, target_uid: int = 0) -> RunPlan:
    verdict, _ = judged(config, req, target_uid=target_uid)
    assert isinstance(verdict, RunPlan), verdict
    return verdict


@pytest.fixture(autouse=True)
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Judging logs nothing, forks nothing, changes no id, limit or directory."""
    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("a judgement had a side effect")

    for name in ("fork", "execve", "setresuid", "setresgid", "initgroups", "chdir", "umask",
                 "setpriority", "kill", "setpgid"):  # fmt: skip
        for module in (os, posix):  # the IMP calls posix (os re-exports it)
            monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(resource, "prlimit", forbidden)
    monkeypatch.setattr(audit, "record", forbidden)
    monkeypatch.setattr(audit, "_syslog", forbidden)
    yield


# -- refusals, in upstream's order of checks --------------------------------

@pytest.mark.parametrize("command", [None, ""])
def test_command_required(command: str | None) -> None:
    assert judged(conf(cmd=allowed()), request(command)) == (
        Refusal("run: command required"), {})


def test_no_configuration_found() -> None:
    assert judged(conf(other=allowed()), request()) == (
        Refusal("run: cmd: no configuration found"), {"command": "cmd"})


@pytest.mark.parametrize("path", [None, "", "usr/bin/true", 7])
def test_path_is_missing_or_invalid(path: object) -> None:
    table: dict[str, object] = {"allowed-users": [ME.pw_name]}
    if path is not None:
        table["path"] = path
    assert judged(conf(cmd=table), request()) == (
        Refusal("run: cmd: path is missing or invalid"), {"command": "cmd"})


def test_insecure_path_wins_over_permission_denied(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o777)
    verdict, notes = judged(conf(cmd={"path": str(script)}), request())
    assert isinstance(verdict, Refusal)
    assert verdict.message.startswith(f"run: {script}: ")
    assert notes == {"command": "cmd"}


def test_missing_path_is_refused() -> None:
    verdict, _ = judged(conf(cmd=allowed(path="/nonexistent/cmd")), request())
    assert verdict == Refusal("run: /nonexistent/cmd: No such file or directory")


def test_caller_without_passwd_entry() -> None:
    nameless = Caller(4242, 4242, None, 0o022)
    assert judged(conf(cmd=allowed()), request(), nameless) == (
        Refusal("Unable to lookup user"), {"command": "cmd", "path": PATH})


@pytest.mark.parametrize("users", [None, [], ["someone-else"], "not-a-list"])
def test_permission_denied(users: object) -> None:
    table: dict[str, object] = {"path": PATH}
    if users is not None:
        table["allowed-users"] = users
    assert judged(conf(cmd=table), request()) == (
        Refusal("run: permission denied"),
        {"command": "cmd", "path": PATH, "caller": ME.pw_name})


def test_failed_to_find_target_user() -> None:
    nobody = next(uid for uid in range(0x7FFF0000, 0x7FFFFFFF) if not _known(uid))
    verdict, notes = judged(conf(cmd=allowed()), request(), target_uid=nobody)
    assert verdict == Refusal("run: failed to find target user")
    assert notes == {"command": "cmd", "path": PATH, "caller": ME.pw_name}


def _known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_unreadable_pid1_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_rules, "_RLIM_NLIMITS", 99)  # fewer rows than that
    verdict, notes = judged(conf(cmd=allowed()), request())
    assert verdict == Refusal("run: failed to read PID 1's resource limits")
    assert list(notes) == ["command", "path", "caller", "env", "env_refused"]


# -- the plan, as root -------------------------------------------------------

def test_root_plan() -> None:
    plan = plan_of(conf(cmd=allowed()), request())
    assert (plan.command, plan.path, plan.argv) == ("cmd", PATH, [PATH])
    assert (plan.as_root, plan.user, plan.uid, plan.gid) == (True, ROOT.pw_name, 0, 0)
    assert (plan.cwd, plan.umask, plan.own_group) == ("/", 0o022, True)
    assert plan.env == {b"FLUX_OWNER_USERID": b"1001", b"HOME": ROOT.pw_dir.encode(),
                        b"USER": ROOT.pw_name.encode(),
                        b"PATH": b"/usr/sbin:/usr/bin:/sbin:/bin"}  # fmt: skip
    assert plan.env_refused == []


def test_root_plan_takes_pid1s_limits_and_nice_value() -> None:
    plan = plan_of(conf(cmd=allowed()), request())
    assert plan.limits == run_rules.pid1_limits()
    assert plan.limits is not None and len(plan.limits) == 16
    assert plan.limits[resource.RLIMIT_NOFILE][0] == "Max open files"
    assert plan.nice == os.getpriority(os.PRIO_PROCESS, 1)


def test_allowed_notes() -> None:
    req = request(FOO1="a", LD_BIND_NOW="1")
    verdict, notes = judged(conf(cmd=allowed(**{"allowed-environment": ["FOO*", "LD_*"]})),
                            req)  # fmt: skip
    assert isinstance(verdict, RunPlan)
    assert notes == {"command": "cmd", "path": PATH, "caller": ME.pw_name,
                     "env": ["FOO1", "FLUX_OWNER_USERID", "HOME", "USER", "PATH"],
                     "env_refused": ["LD_BIND_NOW"]}  # fmt: skip
    assert list(notes) == ["command", "path", "caller", "env", "env_refused"]


# -- the environment ---------------------------------------------------------

def test_environment_in_order_refiltered_and_unsafe_refused() -> None:
    table = allowed(**{"allowed-environment": ["FOO*", "LD_*", "PYTHON*", "HOME", "PATH"],
                       "allowed-unsafe-environment": ["PYTHONPATH"]})  # fmt: skip
    req = request(FOO2="b", BAR="no", LD_PRELOAD="x", PYTHONPATH="/p", FLUX_JOB_ID="f1",
                  HOME="/tmp", PATH="/tmp", FOO1="a")  # fmt: skip
    req.env.append(("FOO=X", "s", b"forged"))  # a name no environment has
    req.env.append(("FOO" + "X" * 200, "s", b"too long"))
    plan = plan_of(conf(cmd=table), req)
    assert [(n.decode(), v.decode()) for n, v in plan.env.items()] == [
        ("FOO2", "b"), ("PYTHONPATH", "/p"), ("FLUX_JOB_ID", "f1"), ("FOO1", "a"),
        ("FLUX_OWNER_USERID", "1001"), ("HOME", ROOT.pw_dir), ("USER", ROOT.pw_name),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")]  # fmt: skip
    assert plan.env_refused == ["LD_PRELOAD"]


def test_request_from_the_privsep_message() -> None:
    kv = KV()
    kv.put_str("cmd", "run")
    kv.put_str("command", "cmd")
    kv.put_str("IMP_RUN_ENV_FOO1", "a")
    kv.put_str("NOT_ENV", "x")
    req = RunRequest.from_kv(kv)
    assert (req.command, req.env) == ("cmd", [("FOO1", "s", b"a")])
    assert "FOO1" in repr(req)
    assert RunRequest.from_kv(KV()).command is None


# -- not setuid: the caller's ids, umask and limits -------------------------

def test_unprivileged_plan_keeps_the_callers() -> None:
    target = pwd.getpwnam("nobody")
    plan = plan_of(conf(cmd=allowed()), request(), target_uid=target.pw_uid)
    assert (plan.as_root, plan.user, plan.uid, plan.gid) == (
        False, "nobody", target.pw_uid, CALLER.gid)
    assert (plan.umask, plan.limits, plan.nice) == (0o077, None, None)
    assert plan.env[b"HOME"] == target.pw_dir.encode()
    shown = plan.as_dict()
    assert shown["limits"] == shown["nice"] == shown["groups"] == "the caller's, unchanged"


# -- printing ----------------------------------------------------------------

def test_as_dict_is_json_and_says_everything() -> None:
    req = request(FOO1="\udcff")  # a byte that is not UTF-8
    plan = plan_of(conf(cmd=allowed(**{"allowed-environment": ["FOO*"]})), req)
    shown = plan.as_dict()
    json.dumps(shown)
    assert list(shown) == ["command", "path", "argv", "user", "uid", "gid", "groups", "env",
                           "env_refused", "cwd", "umask", "limits", "nice", "process_group",
                           "lingering"]  # fmt: skip
    assert shown["umask"] == "0022" and shown["groups"] == "root's (initgroups)"
    assert isinstance(shown["env"], dict) and shown["env"]["FOO1"] == "\udcff"
    assert list(shown["env"]) == ["FOO1", "FLUX_OWNER_USERID", "HOME", "USER", "PATH"]
    assert isinstance(shown["limits"], dict) and len(shown["limits"]) == 16
    assert repr(plan).startswith("RunPlan(command='cmd', path='/usr/bin/true', ")


def test_refusal_as_dict() -> None:
    verdict, _ = judged(conf(), request())
    assert verdict.as_dict() == {"refused": "run: cmd: no configuration found", "code": 1}
