"""``flux-security dry-run exec|run``: the IMP's verdict without its effects.

One code path with the IMP (``sshd -T -C user=...``, ``sudo -l -U``): the
same config load (impconfig.load, the installed IMP's sysconfdir), then
the same two halves.  A forked child becomes the owner for good
(creds.become_user) and runs the unprivileged half's own checks and
encoder (unprivileged/<command>.put_message: argv, stdin or the exec
helper, J verified as the owner, devices resolved as the owner), handing
back the very kv message the IMP's child sends its parent.  This process,
root, then calls the privileged half's judge() on it with the owner as
Caller.  Nothing is carried out; the one side effect is one audit record,
``half="dry-run"``.  The child's own trail only collects facts: it is
never recorded (a dry run must not read as the owner's attempt).

Not the IMP: the setuid IMP never imports this package.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from typing import Any

import click

from ..imp import audit, creds, impconfig
from ..imp.environ import CallerEnv
from ..imp.log import ImpError
from ..imp.state import Imp
from ..imp.verdict import Caller, Refusal
from ..paths import SYSCONFDIR, imp_config_pattern
from ..sign.kv import KV, KVError
from .errors import AdminError

_MAX_REPLY = 8 * 1024 * 1024  # bytes of the child's answer (privsep's kv is at most 4 MiB)


class Verdict:
    """A dry run's outcome: the steps taken, the facts the IMP would audit,
    and the plan (None when refused, then ``refusal`` says why)."""

    def __init__(self, command: str, owner: pwd.struct_passwd) -> None:
        self.command = command
        self.owner = owner
        self.steps: list[dict[str, str]] = []
        self.facts: dict[str, audit.Value] = {}
        self.plan: dict[str, object] | None = None
        self.refusal: Refusal | None = None

    def step(self, name: str, outcome: str) -> None:
        self.steps.append({"step": name, "outcome": outcome})

    def refuse(self, name: str, refusal: Refusal) -> Verdict:
        self.step(name, f"refused: {refusal.message}")
        self.refusal = refusal
        return self

    def as_dict(self) -> dict[str, object]:
        return {"command": self.command, "owner": self.owner.pw_name,
                "owner_uid": self.owner.pw_uid,
                "verdict": "refused" if self.refusal else "allowed",
                "message": self.refusal.message if self.refusal else None,
                "steps": self.steps, "facts": self.facts, "plan": self.plan}  # fmt: skip


# ------------------------------------------------------------------ library


def find_owner(name: str) -> pwd.struct_passwd:
    """``--owner``: a user name or a numeric uid."""
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise AdminError(f"dry-run: unknown user {name}") from None


def caller_env(overrides: tuple[str, ...], helper: str | None = None) -> CallerEnv:
    """What the IMP would get from the launcher: this process's environment,
    with ``--env NAME=VALUE`` set (replacing any earlier one)."""
    entries = [b"%s=%s" % item for item in os.environb.items()]
    settings = [o.encode("utf-8", "surrogateescape") for o in overrides]
    if helper is not None:
        settings.append(b"FLUX_IMP_EXEC_HELPER=" + helper.encode("utf-8", "surrogateescape"))
    for setting in settings:
        name, eq, _ = setting.partition(b"=")
        if not name or not eq:
            raise AdminError(f"dry-run: --env wants NAME=VALUE, not {setting.decode()!r}")
        entries = [e for e in entries if e.partition(b"=")[0] != name] + [setting]
    return CallerEnv(entries)


def judge_request(command: str, owner: pwd.struct_passwd, args: list[str], env: CallerEnv,
            sysconfdir: str = SYSCONFDIR) -> Verdict:
    """Judge ``flux-imp COMMAND ARGS...`` run by ``owner`` as the installed
    IMP would, with its functions; record one dry-run audit record."""
    if os.geteuid() != 0:
        raise AdminError("dry-run: must run as root (it judges as the IMP's privileged half)")
    verdict = Verdict(command, owner)
    trail = audit.Trail(command, "dry-run")
    trail.note(owner=owner.pw_name, owner_uid=owner.pw_uid)
    _judge(verdict, trail, args, env, sysconfdir)
    verdict.facts = {k: v for k, v in trail.fields.items() if k not in ("half", "caller_uid")}
    try:
        if verdict.refusal is None:
            trail.decide("allowed")
        else:
            trail.decide(f"refused: {verdict.refusal.message}")
    except ImpError as exc:  # audit-required and syslog did not take it
        raise AdminError(exc.message) from exc
    return verdict


def _judge(verdict: Verdict, trail: audit.Trail, args: list[str], env: CallerEnv,
           sysconfdir: str) -> None:
    """The IMP's start-up (main._run) and both halves, minus every effect."""
    command, owner = verdict.command, verdict.owner
    name = f"load {imp_config_pattern(sysconfdir)}"
    cwd = os.getcwd()
    try:
        conf = impconfig.load(env, False, cwd, sysconfdir)
    except ImpError as exc:
        verdict.refuse(name, Refusal(exc.message, exc.code))
        return
    verdict.step(name, "ok")
    from .. import conf as cf
    from ..imp import cgroup

    audit.configure(cf.as_bool(conf.section("audit-required")), relay=False)
    info = cgroup.detect()
    if info is None:
        verdict.refuse("detect the IMP's cgroup", Refusal("Failed to get current cgroup info"))
        return
    if owner.pw_uid == 0:  # main._run: the real uid may not be root's
        verdict.refuse("caller is not root", Refusal("Refusing to run as root"))
        return
    umask = os.umask(0o022)
    os.umask(umask)
    imp = Imp(["flux-imp", command, *args], env, conf, info, umask, False, cwd=cwd)
    name = f"unprivileged half, as {owner.pw_name} (uid {owner.pw_uid})"
    reply = _owner_half(imp, owner)
    trail.note(**reply.get("notes", {}))
    if "refused" in reply:
        verdict.refuse(name, Refusal(reply["refused"], reply["code"]))
        return
    try:
        kv = KV.decode(bytes.fromhex(reply["kv"]))
    except (KVError, ValueError, KeyError):
        raise AdminError(f"dry-run: the owner's half answered nonsense: {reply!r}") from None
    verdict.step(name, "ok")
    caller = Caller(owner.pw_uid, owner.pw_gid, owner.pw_name, umask)
    # As the IMP's parent is: real ids the owner's, effective root's (the
    # none mechanism, for one, checks J's userid against the real uid).
    if not creds.simulate_sudo(owner.pw_name):
        raise AdminError(f"dry-run: cannot take {owner.pw_name}'s real ids")
    try:
        plan = _privileged_half(verdict, imp, kv, caller, trail)
    finally:
        os.setresuid(0, -1, -1)
        os.setresgid(0, -1, -1)
    if plan is None:
        return
    if isinstance(plan, Refusal):
        verdict.refuse("privileged half: judge()", plan)
        return
    verdict.step("privileged half: judge()", "allowed")
    verdict.plan = plan.as_dict()


def _privileged_half(verdict: Verdict, imp: Imp, kv: KV, caller: Caller,
                     trail: audit.Trail) -> Any:
    """The privileged half's judge(): a plan, a Refusal, or None (refused before)."""
    if verdict.command == "exec":
        from ..imp.exec_rules import security_context
        from ..imp.privileged import exec as privileged_exec

        try:
            ctx = security_context(imp)  # as root, as the parent loads it
        except ImpError as exc:
            verdict.refuse("privileged half: load the signing config", Refusal(exc.message))
            return None
        return privileged_exec.judge(kv, imp.conf, ctx, caller, imp.env, imp.cgroup, trail)
    from ..imp.run_rules import RunRequest, judge

    return judge(RunRequest.from_kv(kv), imp.conf, caller, trail)


def _owner_half(imp: Imp, owner: pwd.struct_passwd) -> dict[str, Any]:
    """Run the command's unprivileged half in a child that is ``owner`` for
    good; its answer: the kv message (hex) or the refusal, and its facts."""
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            reply = _as_owner(imp, owner)
        except BaseException as exc:  # never unwind into the parent's code
            reply = {"refused": f"internal error: {exc!r}", "code": 1}
        try:
            data = json.dumps(reply).encode()
            while data:
                data = data[os.write(wfd, data):]
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        data = f.read(_MAX_REPLY)
    os.waitpid(pid, 0)
    try:
        answer: dict[str, Any] = json.loads(data)
    except ValueError:
        raise AdminError("dry-run: the owner's half died without an answer") from None
    return answer


def _as_owner(imp: Imp, owner: pwd.struct_passwd) -> dict[str, Any]:
    """In the child: become ``owner``, then the IMP child's own steps
    (main._child: the caller's cwd, the command's put_message)."""
    try:
        creds.become_user(owner)  # for good, verified; the owner's groups
    except ImpError as exc:
        return {"refused": exc.message, "code": exc.code}
    if imp.cwd:
        try:  # noqa: SIM105 - as main._child
            os.chdir(imp.cwd)
        except OSError:
            pass
    command = imp.argv[1]
    # Imported only here, as the owner: the unprivileged folder never runs as root.
    if command == "exec":
        from ..imp.unprivileged.exec import put_message
    else:
        from ..imp.unprivileged.run import put_message
    trail = audit.Trail(command, "unprivileged")  # facts only: never decided
    kv = KV()
    kv.put_str("cmd", command)
    try:
        put_message(imp, kv, trail)
    except ImpError as exc:
        return {"refused": exc.message, "code": exc.code, "notes": _notes(trail)}
    return {"kv": kv.encode().hex(), "notes": _notes(trail)}


def _notes(trail: audit.Trail) -> dict[str, audit.Value]:
    return {k: v for k, v in trail.fields.items() if k not in ("half", "caller_uid")}


# ------------------------------------------------------------------ output


def _hide_values(plan: dict[str, object], command: str) -> None:
    """Names only (values with --show-env): a job's environment may hold secrets."""
    if command == "exec":
        environ = plan["environ"]
        assert isinstance(environ, list)
        plan["environ"] = [entry.partition("=")[0] for entry in environ]
    else:
        env = plan["env"]
        assert isinstance(env, dict)
        plan["env"] = list(env)


def _text(verdict: Verdict) -> str:
    lines = [f"{s['step']}: {s['outcome']}" for s in verdict.steps]
    if verdict.facts:
        lines.append("facts (as the IMP audits them):")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in verdict.facts.items()]
    if verdict.plan is not None:
        lines.append("plan:")
        lines += _tree(verdict.plan, "  ")
    return "\n".join(lines)


def _tree(value: object, indent: str) -> list[str]:
    lines = []
    assert isinstance(value, dict)
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines.append(f"{indent}{key}:")
            lines += _tree(item, indent + "  ")
        elif isinstance(item, list) and item and key in ("environ", "env", "allow", "after"):
            lines.append(f"{indent}{key}:")
            lines += [f"{indent}  {entry}" for entry in item]
        else:
            lines.append(f"{indent}{key}: {json.dumps(item)}")
    return lines


def _report(verdict: Verdict, as_json: bool, show_env: bool) -> None:
    if verdict.plan is not None and not show_env:
        _hide_values(verdict.plan, verdict.command)
    click.echo(json.dumps(verdict.as_dict(), indent=2) if as_json else _text(verdict))
    if verdict.refusal is not None:
        # The IMP's own message, last on stderr (what follows "flux-imp: Fatal: ").
        raise AdminError(verdict.refusal.message, 1)


# ------------------------------------------------------------------ commands

_common = [
    click.option("--owner", required=True, metavar="USER",
                 help="The instance owner who would run flux-imp (name or uid)."),
    click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
                 help="Set a variable of the caller's environment (repeatable); "
                      "the rest is this process's environment."),
    click.option("--json", "as_json", is_flag=True, help="Print the steps and plan as JSON."),
    click.option("--show-env", is_flag=True,
                 help="Show the values of the job's environment, not only the names."),
    click.option("--sysconfdir", default=SYSCONFDIR, show_default=True, hidden=True,
                 help="Read SYSCONFDIR/flux as the IMP built with it does."),
]


def _options(f: Any) -> Any:
    for option in reversed(_common):
        f = option(f)
    return f


@click.group("dry-run")
def dry_run() -> None:
    """Judge an IMP request as flux-imp would, executing nothing.

    Exit 0 if the IMP would act, 1 if it would refuse (its message last on
    stderr).  Writes one audit record, half="dry-run".  Run as root.
    """


@dry_run.command("exec", context_settings={"ignore_unknown_options": True})
@_options
@click.option("--helper", metavar="CMD",
              help="Run CMD as the owner for the input (FLUX_IMP_EXEC_HELPER), as the IMP would.")
@click.argument("shell")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def exec_(owner: str, env: tuple[str, ...], as_json: bool, show_env: bool, sysconfdir: str,
          helper: str | None, shell: str, args: tuple[str, ...]) -> None:
    """Would `flux-imp exec SHELL ARG...`, run by USER, start the job?

    Reads the IMP's input, {"J": ..., "options": ...}, on stdin (or from
    --helper) and prints each step, the facts and the plan: target user,
    ids and groups, argv, environment, cwd, umask, containment, lingering.
    """
    user = find_owner(owner)
    verdict = judge_request("exec", user, [shell, *args], caller_env(env, helper), sysconfdir)
    _report(verdict, as_json, show_env)


@dry_run.command("run")
@_options
@click.argument("name", required=False, default="")
def run_(owner: str, env: tuple[str, ...], as_json: bool, show_env: bool, sysconfdir: str,
         name: str) -> None:
    """Would `flux-imp run NAME`, run by USER, run [run.NAME].path?

    Prints each step and the plan: the script, as whom, its environment
    after filtering, umask and limits.
    """
    user = find_owner(owner)
    verdict = judge_request("run", user, [name], caller_env(env), sysconfdir)
    _report(verdict, as_json, show_env)

