"""``exec``'s judgement, as a function: privileged/exec.judge() from the
privsep message (or a decoded Request), the configs and the caller to an
ExecPlan or upstream's refusal, in upstream's order of checks, with the
audit notes it leaves; and contain/setup.plan(), the containment part.
No root, no fork, no launcher: what an admin dry run calls.
"""

from __future__ import annotations

import json
import os
import posix
import pwd
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from flux_imp.imp import audit, creds, options
from flux_imp.imp.cgroup import CgroupInfo
from flux_imp.imp.devices import DeviceRules, Rule
from flux_imp.imp.environ import CallerEnv
from flux_imp.imp.exec_rules import Request
from flux_imp.imp.impconfig import ImpConfig
from flux_imp.imp.privileged.contain import bpf, namespaces, pam
from flux_imp.imp.privileged.contain import cgroup as jobcgroup
from flux_imp.imp.privileged.contain.setup import ContainPlan
from flux_imp.imp.privileged.exec import ExecPlan, judge
from flux_imp.imp.verdict import Caller, Refusal
from flux_imp.sign import Context, none, wrap_as
from flux_imp.sign.kv import KV

from .signconf import NONE_ONLY, make_context

SH = "/bin/sh"
ME = pwd.getpwuid(os.getuid())
CALLER = Caller(1001, 1002, ME.pw_name, 0o027)
TARGET = pwd.getpwnam("nobody")
CGROUP = CgroupInfo("/sys/fs/cgroup/user.slice/imp", True, False)
ENV = CallerEnv([b"PATH=/usr/bin:/bin", b"LD_PRELOAD=libx.so", b"HOME=/home/x",
                 b"GLIBC_TUNABLES=a=1", b"NOTIFY_SOCKET=/run/notify"])  # fmt: skip
JOB = "f2abc"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Context:
    return make_context(tmp_path_factory.mktemp("sign"), NONE_ONLY)


@pytest.fixture(autouse=True)
def none_verifies_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """J of mechanism none is valid only for the real uid: make that the target's."""
    monkeypatch.setattr(none, "posix", SimpleNamespace(getuid=lambda: TARGET.pw_uid))


@pytest.fixture(autouse=True)
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Judging logs nothing, forks nothing, changes no id, mount or cgroup."""
    def forbidden(*_: object, **__: object) -> None:
        raise AssertionError("a judgement had a side effect")

    for name in ("fork", "execve", "setresuid", "setresgid", "initgroups", "setgroups",
                 "chdir", "umask", "setsid", "kill", "mkdir", "rmdir"):  # fmt: skip
        for module in (os, posix):  # the IMP calls posix (os re-exports it)
            monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(audit, "record", forbidden)
    monkeypatch.setattr(audit, "_syslog", forbidden)
    monkeypatch.setattr(bpf, "attach", forbidden)
    monkeypatch.setattr(jobcgroup.JobCgroup, "create", forbidden)
    monkeypatch.setattr(pam, "Session", forbidden)
    monkeypatch.setattr(namespaces, "private_tmp", forbidden)
    monkeypatch.setattr(creds, "join_new_session_keyring", forbidden)
    yield


def conf(**exec_extra: object) -> ImpConfig:
    table = {"allowed-users": [ME.pw_name], "allowed-shells": [SH], **exec_extra}
    return ImpConfig({"exec": table}, None, 0)


def token(ctx: Context, user: pwd.struct_passwd = TARGET) -> str:
    return wrap_as(ctx, user.pw_uid, b"", "none")


def message(J: str | None, *args: str, shell: str = SH,
            extra: dict[str, str] | None = None) -> KV:
    kv = KV()
    kv.put_str("cmd", "exec")
    if J is not None:
        kv.put_str("J", J)
    kv.put_str("shell_path", shell)
    for i, arg in enumerate([shell, *(args or (JOB,))]):
        kv.put_str(f"args{i}", arg)
    for key, value in (extra or {}).items():
        kv.put_str(key, value)
    return kv


def judged(request: Request | KV, ctx: Context, config: ImpConfig | None = None,
           caller: Caller = CALLER, cgroup: CgroupInfo = CGROUP,
           ) -> tuple[ExecPlan | Refusal, dict[str, audit.Value]]:  # fmt: skip
    """The verdict, and the notes it left beyond the trail's own fields."""
    notes = audit.Trail("exec", "privileged")
    verdict = judge(request, config or conf(), ctx, caller, ENV, cgroup, notes)
    return verdict, {k: v for k, v in notes.fields.items() if k not in ("half", "caller_uid")}


def plan_of(request: Request | KV, ctx: Context, config: ImpConfig | None = None,
            cgroup: CgroupInfo = CGROUP) -> ExecPlan:
    verdict, _ = judged(request, ctx, config, cgroup=cgroup)
    assert isinstance(verdict, ExecPlan), verdict
    return verdict


def notes_until_j(J: str) -> dict[str, audit.Value]:
    return {"caller": ME.pw_name, "shell": SH, "args": [JOB],
            "J_sha256": audit.sha256_hex(J.encode())}  # fmt: skip


def target_notes(J: str) -> dict[str, audit.Value]:
    return {**notes_until_j(J), "mechanism": "none", "target_uid": TARGET.pw_uid,
            "target": TARGET.pw_name}  # fmt: skip


# -- refusals, in upstream's order of checks --------------------------------


def test_caller_without_a_passwd_entry_comes_first(ctx: Context) -> None:
    nameless = Caller(4242, 4242, None, 0o022)
    assert judged(message(None), ctx, caller=nameless) == (
        Refusal("exec: failed to find IMP user"), {})


def test_caller_not_allowed_wins_over_a_malformed_message(ctx: Context) -> None:
    assert judged(message(None), ctx, conf(**{"allowed-users": []})) == (
        Refusal(f"exec: user {ME.pw_name} not in allowed-users list"), {"caller": ME.pw_name})


def test_message_is_decoded_strictly_after_the_caller_check(ctx: Context) -> None:
    assert judged(message(None), ctx) == (Refusal("exec: Error decoding J"),
                                          {"caller": ME.pw_name})
    assert judged(message(token(ctx), extra={"extra": "x"}), ctx)[0] == Refusal(
        "exec: unexpected data from privsep child")


def test_signature_is_verified(ctx: Context) -> None:
    assert judged(message("x"), ctx) == (
        Refusal("exec: signature validation failed: sign-unwrap: header decode error: "
                "Invalid argument"), notes_until_j("x"))


def test_root_is_refused_before_the_shell(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(none, "posix", SimpleNamespace(getuid=lambda: 0))
    J = token(ctx, pwd.getpwuid(0))
    verdict, notes = judged(message(J, shell="/bin/bash"), ctx)
    assert verdict == Refusal("exec: switching to user root not supported")
    assert (notes["target"], notes["target_uid"]) == ("root", 0)


def test_shell_not_allowed(ctx: Context) -> None:
    J = token(ctx)
    assert judged(message(J, shell="/bin/bash"), ctx) == (
        Refusal("exec: shell not in allowed-shells list"),
        {**target_notes(J), "shell": "/bin/bash"})


# -- the plan ----------------------------------------------------------------


def test_plan_of_an_uncontained_job(ctx: Context) -> None:
    J = token(ctx)
    verdict, notes = judged(message(J, JOB, "-v"), ctx)
    assert isinstance(verdict, ExecPlan)
    assert notes == {**target_notes(J), "args": [JOB, "-v"]}
    assert (verdict.user.pw_name, verdict.user.pw_uid, verdict.user.pw_gid) == (
        TARGET.pw_name, TARGET.pw_uid, TARGET.pw_gid)
    assert verdict.groups == os.getgrouplist(TARGET.pw_name, TARGET.pw_gid)
    assert (verdict.shell, verdict.argv) == (SH, [SH, JOB, "-v"])
    assert verdict.environ == [b"PATH=/usr/bin:/bin", b"HOME=/home/x",
                               b"NOTIFY_SOCKET=/run/notify"]  # fmt: skip
    assert (verdict.cwd, verdict.umask, verdict.fds) == ("/", 0o027, (0, 1, 2))
    assert verdict.new_session and verdict.new_session_keyring
    assert verdict.contain is None


def test_a_decoded_request_is_judged_like_the_message(ctx: Context) -> None:
    J = token(ctx)
    request = Request(SH, [SH, JOB], J, None, {})
    assert plan_of(request, ctx).as_dict() == plan_of(message(J), ctx).as_dict()


def test_keep_loader_env_keeps_the_callers_environment(ctx: Context) -> None:
    plan = plan_of(message(token(ctx)), ctx, conf(**{"keep-loader-env": True}))
    assert plan.environ == ENV.entries


def test_lingering_without_a_job_cgroup(ctx: Context) -> None:
    plain = plan_of(message(token(ctx)), ctx).lingering
    assert (plain.kill, plain.waits_for) == ("SIGKILL the IMP's children", None)
    assert plain.notify_socket == "/run/notify"
    killing = CgroupInfo("/sys/fs/cgroup/x/imp-shell-1", True, True)
    mode = plan_of(message(token(ctx)), ctx, cgroup=killing).lingering
    assert mode.waits_for == killing.path
    assert mode.kill.startswith(f"SIGKILL every process in the IMP's cgroup {killing.path}")


def test_as_dict_prints_everything(ctx: Context) -> None:
    plan = plan_of(message(token(ctx)), ctx)
    printed = json.loads(json.dumps(plan.as_dict()))
    assert printed["user"] == TARGET.pw_name and printed["umask"] == "0027"
    assert printed["environ"][0] == "PATH=/usr/bin:/bin"
    assert printed["lingering"]["forwards"] == sorted(
        ["SIGALRM", "SIGCONT", "SIGHUP", "SIGINT", "SIGTERM", "SIGTTIN", "SIGTTOU",
         "SIGWINCH"])  # fmt: skip
    assert printed["lingering"]["after"] == [
        "exit as the job shell did (its code, or its signal)"]
    assert repr(plan).startswith(f"ExecPlan(user={TARGET.pw_name!r}, uid={TARGET.pw_uid}")


# -- containment -------------------------------------------------------------


def cgroup2_parent() -> str:
    """A directory under a cgroup2 mount (nothing is made there)."""
    with open("/proc/self/mounts", encoding="utf-8") as f:
        mounts = [line.split()[1] for line in f if line.split()[2:3] == ["cgroup2"]]
    if not mounts:
        pytest.skip("no cgroup2 mount")
    return mounts[0].rstrip("/") + "/delegated"


def contain_of(ctx: Context, config: ImpConfig, device: DeviceRules | None = None,
               limits: options.Limits | None = None, arg: str = JOB,
               cgroup: CgroupInfo = CGROUP,
               ) -> tuple[ContainPlan | Refusal, dict[str, audit.Value]]:  # fmt: skip
    request = Request(SH, [SH, arg], token(ctx), device, limits or {})
    verdict, notes = judged(request, ctx, config, cgroup=cgroup)
    for key in target_notes(token(ctx)):
        notes.pop(key, None)
    if isinstance(verdict, Refusal):
        return verdict, notes
    assert verdict.contain is not None
    return verdict.contain, notes


def test_private_tmp_plan_and_invalid_size(ctx: Context) -> None:
    contain, _ = contain_of(ctx, conf(**{"private-tmp": {"size": "10m"}}))
    assert isinstance(contain, ContainPlan) and contain.private_tmp is not None
    assert (contain.private_tmp.size, contain.private_tmp.dirs) == ("10m", ("/tmp", "/dev/shm"))
    assert (contain.cgroup, contain.devices, contain.pam_service) == (None, None, None)
    assert contain_of(ctx, conf(**{"private-tmp": {"size": "bad size"}})) == (
        Refusal("exec: private-tmp: invalid size"), {})


def test_job_cgroup_plan(ctx: Context) -> None:
    parent = cgroup2_parent()
    limits: options.Limits = {"MemoryMax": 1 << 20, "TasksMax": None}
    contain, notes = contain_of(ctx, conf(cgroup={"parent": parent}), limits=limits)
    assert isinstance(contain, ContainPlan) and contain.cgroup is not None
    path = f"{parent}/imp-shell-{JOB}"
    assert (contain.cgroup.parent, contain.cgroup.path) == (parent, path)
    assert contain.cgroup.values == {"memory.max": str(1 << 20), "pids.max": "max"}
    assert notes == {}  # noted as each step is carried out
    lingering = plan_of(Request(SH, [SH, JOB], token(ctx), None, limits), ctx,
                        conf(cgroup={"parent": parent})).lingering
    assert lingering.waits_for == path
    assert lingering.after[0] == f"remove the job cgroup {path}"


def test_cgroup_refusals(ctx: Context) -> None:
    parent = cgroup2_parent()
    assert contain_of(ctx, conf(cgroup={"parent": parent}), arg="..")[0] == Refusal(
        "exec: cgroup: job id '..' cannot name a cgroup")
    assert contain_of(ctx, conf(cgroup={"parent": "relative"}))[0] == Refusal(
        "exec: cgroup: parent relative is not in a cgroup2 hierarchy")
    v1 = CgroupInfo("/sys/fs/cgroup/systemd/x", False, False)
    assert contain_of(ctx, conf(cgroup={}), cgroup=v1)[0] == Refusal(
        "exec: cgroup: the IMP is not in a cgroup2 hierarchy")


def test_limits_without_a_cgroup_table_are_ignored(ctx: Context) -> None:
    contain, _ = contain_of(ctx, conf(**{"private-tmp": {}}), limits={"TasksMax": 5})
    assert isinstance(contain, ContainPlan)
    assert (contain.cgroup, contain.limits_ignored) == (None, True)


def test_devices_go_on_the_job_cgroup(ctx: Context) -> None:
    parent = cgroup2_parent()
    rules = DeviceRules("closed", (Rule("c", 1, 3, "rwm"),))
    contain, _ = contain_of(ctx, conf(cgroup={"parent": parent}), device=rules)
    assert isinstance(contain, ContainPlan) and contain.devices is not None
    assert (contain.devices.cgroup, contain.devices.texts()) == (
        f"{parent}/imp-shell-{JOB}", ["c 1:3 rwm"])


def test_devices_on_the_root_cgroup_are_refused_with_the_steps_before(ctx: Context) -> None:
    mount = jobcgroup.cgroup2_mount(cgroup2_parent())
    assert mount is not None
    root = CgroupInfo(mount, True, False)
    verdict, notes = contain_of(ctx, conf(), device=DeviceRules("strict", ()), cgroup=root)
    assert verdict == Refusal("exec: failed to apply device containment policy: refusing to "
                              f"attach a device program to the root cgroup {mount}")
    assert notes == {}
    # A refusal after a planned step records that step, as when it ran first.
    parent = cgroup2_parent()
    verdict, notes = contain_of(
        ctx, conf(cgroup={"parent": parent}, **{"private-tmp": {"size": "x"}}),
        device=DeviceRules("strict", ()), limits={"TasksMax": 3})  # fmt: skip
    assert verdict == Refusal("exec: private-tmp: invalid size")
    assert notes == {"cgroup": f"{parent}/imp-shell-{JOB}", "limits": ["pids.max=3"],
                     "device_policy": "strict", "device_cgroup": f"{parent}/imp-shell-{JOB}",
                     "devices": []}  # fmt: skip


def test_pam_service_or_the_missing_library(ctx: Context) -> None:
    verdict, _ = contain_of(ctx, conf(**{"pam-support": True}))
    if pam.load() is None:
        assert verdict == Refusal(
            "exec: pam-support=true, but IMP was built without --enable-pam")
    else:
        assert isinstance(verdict, ContainPlan) and verdict.pam_service == "flux"


def test_containment_as_dict_is_json(ctx: Context) -> None:
    parent = cgroup2_parent()
    config = conf(cgroup={"parent": parent}, **{"private-tmp": {}})
    plan = plan_of(Request(SH, [SH, JOB], token(ctx), DeviceRules("strict", ()),
                           {"CPUQuotaPerSecUSec": 500_000}), ctx, config)
    printed = json.loads(json.dumps(plan.as_dict()))["containment"]
    assert printed["cgroup"]["files"] == {"cpu.max": "50000 100000"}
    assert printed["devices"]["allow"] == ["nothing: every device is denied"]
    assert printed["private_tmp"] == {"dirs": ["/tmp", "/dev/shm"], "size": None}
    assert "ContainPlan(" in repr(plan)
