"""``flux-security dry-run``: the differential corpus (issue 11 item 3).

Each request goes through the real setuid IMP (the INSTALLED build, made
with a private SYSCONFDIR, so path paranoia and every check are the
production ones) as the owner, and through the dry run (``--sysconfdir``
the same tree), from the same cwd with the same environment and stdin:
same verdict, same message; for allowed jobs the plan's uid, gid, groups
and environment are what the job shell really got.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flux_imp.sign.cert import Cert

from . import impenv, users
from .jobs import in_cgroup, sign_as
from .signconf import ca_mode, sign_table

TOP = Path(__file__).resolve().parents[1]
# Not LANG=C: Python would add LC_CTYPE=C.UTF-8 to its own environment (PEP 538).
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
# The job prints what it got: ids, groups, then its environment (NUL-separated).
REPORT = 'id -u; id -g; id -G; echo ---; env -0'
SHELL_ADDS = {"PWD", "SHLVL", "_", "OLDPWD"}  # what dash sets itself


@dataclass
class Site:
    root: Path  # SYSCONFDIR
    binary: Path  # the installed build reading it
    owner: pwd.struct_passwd
    guest: pwd.struct_passwd
    munge: str
    code: Path  # impenv's world-readable copy of this tree's flux_imp (its site dir)
    sign: str = field(init=False)

    def __post_init__(self) -> None:
        self.sign = str(self.root / "flux/security/conf.d/*.toml")

    def configure(self, imp: str | None, mechanisms: tuple[str, ...] = ("munge", "none"),
                  sign_extra: str = "", max_ttl: int = 30) -> None:
        """The IMP's config (None: none) and the signing config: ``mechanisms``
        (the first the default), then ``sign_extra`` ([sign.curve], [ca])."""
        conf = self.root / "flux/imp/conf.d"
        for old in conf.glob("*.toml"):
            old.unlink()
        if imp is not None:
            impenv.write_config(conf, imp)
        impenv.write_config(self.root / "flux/security/conf.d",
                            sign_table(mechanisms[0], mechanisms, max_ttl)
                            + f'[sign.munge]\nsocket-path = "{self.munge}"\n' + sign_extra,
                            "sign.toml")

    def exec_table(self, **extra: str) -> str:
        text = (f'[exec]\nallowed-users = ["{self.owner.pw_name}"]\n'
                'allowed-shells = ["/bin/sh"]\n')
        return text + "".join(f"{k} = {v}\n" for k, v in extra.items())


def runner(site: Site) -> str:
    """The dry run from "/" on this tree's code, with no variable of ours
    added.  The code is impenv's copy, which the owner can read: the dry
    run's child becomes the owner and imports the unprivileged half then
    (the checkout itself may be a 0700 directory)."""
    return (f"import sys; sys.path.insert(0, {str(site.code)!r}); "
            "from flux_imp.admin.cli import main; main(prog_name='flux-security')")



@pytest.fixture(scope="module")
def site(imp: impenv.ImpInstall, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
         munged: str) -> Iterator[Site]:
    with users.world_dir("fluximp-dryrun-") as base:
        root = base / "etc"
        for sub in ("", "flux", "flux/imp", "flux/security"):
            (root / sub).mkdir(mode=0o755)
        binary = impenv.build_installed(imp, imp.prefix / "flux-imp-dryrun", str(root))
        try:
            yield Site(root, binary, owner, guest, munged, imp.site)
        finally:
            binary.unlink()


def real(site: Site, command: str, args: list[str], stdin: bytes, env: dict[str, str],
         cgroup: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    drop = users.become(site.owner) if cgroup is None else in_cgroup(cgroup, site.owner)
    return impenv.run(site.binary, [command, *args], as_user=drop, env=env, stdin=stdin)


def dry(site: Site, command: str, args: list[str], stdin: bytes, env: dict[str, str],
        *options: str, cgroup: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    def enter() -> None:
        if cgroup is not None:  # where the IMP would run: its cgroup shapes the plan
            (cgroup / "cgroup.procs").write_text("0")

    return subprocess.run(
        [sys.executable, "-c", runner(site), "dry-run", command, "--owner", site.owner.pw_name,
         "--sysconfdir", str(site.root), *options, "--", *args],
        input=stdin, capture_output=True, env=env, cwd="/", timeout=60, check=False,
        preexec_fn=enter)


def fatal(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode().splitlines()
    assert lines, result
    return lines[-1]


def agree(site: Site, command: str, args: list[str], stdin: bytes = b"",
          env: dict[str, str] | None = None, cgroup: Path | None = None,
          ) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any]]:
    """Both ways; the same verdict and message.  The real run and the plan."""
    env = dict(ENV if env is None else env)
    got = real(site, command, args, stdin, env, cgroup)
    judged = dry(site, command, args, stdin, env, "--json", "--show-env", cgroup=cgroup)
    report = json.loads(judged.stdout)
    if got.returncode == 0:
        assert judged.returncode == 0, (got, judged)
        assert report["verdict"] == "allowed"
        return got, report
    assert judged.returncode == 1, (got, judged)
    message = fatal(got).removeprefix("flux-imp: Fatal: ")
    assert fatal(got) == f"flux-imp: Fatal: {message}", got.stderr
    assert fatal(judged) == f"flux-security: {message}", (got.stderr, judged.stderr)
    assert report["verdict"] == "refused" and report["message"] == message
    return got, report


def job_saw(out: bytes) -> tuple[int, int, list[int], dict[str, str]]:
    head, _, env = out.partition(b"---\n")
    uid, gid, groups = head.decode().splitlines()
    seen = dict(e.decode().split("=", 1) for e in env.split(b"\0") if e)
    return int(uid), int(gid), sorted(map(int, groups.split())), seen


def matches_job(got: subprocess.CompletedProcess[bytes], plan: dict[str, Any]) -> None:
    uid, gid, groups, seen = job_saw(got.stdout)
    assert (plan["uid"], plan["gid"]) == (uid, gid)
    assert sorted(plan["groups"]) == groups
    planned = dict(e.split("=", 1) for e in plan["environ"])
    assert {k: v for k, v in seen.items() if k not in SHELL_ADDS} == planned


def request(token: str, options: Any = None) -> bytes:
    data: dict[str, Any] = {"J": token}
    if options is not None:
        data["options"] = options
    return json.dumps(data).encode()


# ------------------------------------------------------------------ exec


@pytest.mark.parametrize("mechanism", ["munge", "none"])
def test_exec_allowed_plan_is_what_the_job_got(site: Site, mechanism: str) -> None:
    site.configure(site.exec_table(), (mechanism,))
    # none: only the signer's own uid verifies, so the owner's own job.
    signer = site.guest if mechanism == "munge" else site.owner
    token = sign_as(signer, site.sign)
    got, report = agree(site, "exec", ["/bin/sh", "-c", REPORT], request(token),
                        {**ENV, "LD_PRELOAD": "", "FOO": "bar"})
    plan = report["plan"]
    assert got.returncode == 0, got.stderr
    assert plan["user"] == signer.pw_name
    matches_job(got, plan)
    assert "LD_PRELOAD" not in {e.split("=")[0] for e in plan["environ"]}
    assert report["facts"]["mechanism"] == mechanism


def test_exec_helper_input(site: Site, world_tmp: Path) -> None:
    site.configure(site.exec_table())
    data = world_tmp / "input.json"
    data.write_bytes(request(sign_as(site.guest, site.sign)))
    data.chmod(0o644)
    env = {**ENV, "FLUX_IMP_EXEC_HELPER": f"cat {data}"}
    got, report = agree(site, "exec", ["/bin/sh", "-c", REPORT], b"", env)
    matches_job(got, report["plan"])
    # --helper is the same as the variable.
    via_option = dry(site, "exec", ["/bin/sh", "-c", REPORT], b"", ENV, "--json",
                     "--helper", f"cat {data}")
    assert via_option.returncode == 0, via_option.stderr


def test_exec_private_tmp_and_devices(site: Site, job_cgroup: Path) -> None:
    site.configure(site.exec_table() + '[exec.private-tmp]\nsize = "1M"\n')
    token = sign_as(site.guest, site.sign)
    options = {"DevicePolicy": "closed", "DeviceAllow": [["/dev/null", "rw"]]}
    got, report = agree(site, "exec", ["/bin/sh", "-c", REPORT], request(token, options),
                        cgroup=job_cgroup)
    assert got.returncode == 0, got.stderr
    matches_job(got, report["plan"])
    contain = report["plan"]["containment"]
    assert contain["private_tmp"]["size"] == "1M"
    assert contain["devices"]["policy"] == "closed"


def test_exec_pam_support(site: Site) -> None:
    site.configure(site.exec_table(**{"pam-support": "true"}))
    got, report = agree(site, "exec", ["/bin/sh", "-c", REPORT],
                        request(sign_as(site.guest, site.sign)))
    assert got.returncode == 0, got.stderr
    assert report["plan"]["containment"]["pam_service"]


def test_exec_cgroup_in_a_child_cgroup(site: Site, job_cgroup: Path, world_tmp: Path) -> None:
    shell = world_tmp / "job-shell"  # as flux-shell: JOBID, then its own arguments
    shell.write_text('#!/bin/sh\nshift; exec /bin/sh "$@"\n')
    shell.chmod(0o755)
    imp = site.exec_table().replace('"/bin/sh"]', f'"/bin/sh", "{shell}"]')
    site.configure(imp + '[exec.cgroup]\n')
    token = sign_as(site.guest, site.sign)
    args = [str(shell), "f1dry", "-c", REPORT + "; echo; cat /proc/self/cgroup"]
    got, report = agree(site, "exec", args, request(token), cgroup=job_cgroup)
    assert got.returncode == 0, got.stderr
    out, _, cgroups = got.stdout.rpartition(b"\0\n")  # env -0's last NUL, then echo's newline
    got = subprocess.CompletedProcess(got.args, 0, out + b"\0", b"")
    matches_job(got, report["plan"])
    ran_in = cgroups.decode().strip().split("::", 1)[1]
    planned = report["plan"]["containment"]["cgroup"]["path"]
    assert planned.endswith(ran_in) and ran_in.endswith("/imp-shell-f1dry"), (ran_in, planned)


REFUSALS_EXEC = [
    "user not allowed", "shell not allowed", "garbage J", "tampered J", "mechanism not allowed",
    "target root", "unknown uid", "malformed JSON", "not an object", "no J", "bad options",
    "bad DevicePolicy", "missing arguments", "helper fails", "helper empty",
    "no config", "config world-writable", "unknown owner shell", "empty input",
    "none for another user",
]


@pytest.mark.parametrize("case", REFUSALS_EXEC)
def test_exec_refusals_agree(site: Site, case: str, world_tmp: Path) -> None:
    imp = site.exec_table()
    mechanisms: tuple[str, ...] = ("munge", "none")
    site.configure(imp, mechanisms)  # J is signed with it (not an earlier test's config)
    token = sign_as(site.guest, site.sign) if case not in ("no config",) else "x"
    args = ["/bin/sh", "-c", "true"]
    stdin = request(token)
    env = dict(ENV)
    if case == "user not allowed":
        imp = imp.replace(site.owner.pw_name, "someone-else")
    elif case == "shell not allowed":
        args = ["/bin/bash", "-c", "true"]
    elif case == "unknown owner shell":
        args = ["/nonexistent/sh", "-c", "true"]
    elif case == "garbage J":
        stdin = request("garbage")
    elif case == "tampered J":
        head, _, rest = token.partition(".")
        stdin = request(head + "." + rest[:-2] + ("A" if rest[-2] != "A" else "B") + rest[-1])
    elif case == "mechanism not allowed":
        mechanisms = ("munge",)
        site.configure(imp, ("none",))
        stdin = request(sign_as(site.guest, site.sign))
    elif case == "target root":
        stdin = request(sign_as(pwd.getpwuid(0), site.sign))
    elif case == "unknown uid":
        ghost = pwd.struct_passwd(("ghost", "x", 54321, 54321, "", "/", "/bin/sh"))
        stdin = request(sign_as(ghost, site.sign))
    elif case == "none for another user":
        site.configure(imp, ("none",))
        stdin = request(sign_as(site.guest, site.sign))
        mechanisms = ("none",)
    elif case == "malformed JSON":
        stdin = b"{not json"
    elif case == "not an object":
        stdin = b"[1, 2]"
    elif case == "no J":
        stdin = b'{"options": {}}'
    elif case == "bad options":
        stdin = request(token, {"DeviceAllow": 5})
    elif case == "bad DevicePolicy":
        stdin = request(token, {"DevicePolicy": "bogus"})
    elif case == "missing arguments":
        args = ["/bin/sh"]
    elif case == "helper fails":
        env["FLUX_IMP_EXEC_HELPER"] = "false"
    elif case == "helper empty":
        env["FLUX_IMP_EXEC_HELPER"] = ""
    elif case == "empty input":
        stdin = b""
    site.configure(None if case == "no config" else imp, mechanisms)
    if case == "config world-writable":
        (site.root / "flux/imp/conf.d/imp.toml").chmod(0o666)
    got, report = agree(site, "exec", args, stdin, env)
    assert got.returncode != 0, got
    assert report["plan"] is None


# ------------------------------------------------------------------ curve

HOME_MODE = "[sign.curve]\nrequire-ca = false\n"


def chown(path: Path, user: pwd.struct_passwd) -> None:
    os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


@contextlib.contextmanager
def guest_home_cert(site: Site) -> Iterator[Path]:
    """The guest's own cert pair in ~/.flux/curve (sig, sig.pub), made by the
    guest with ``python -m flux_imp.sign keygen``; that directory's path.
    ~/.flux is removed after."""
    dot = Path(site.guest.pw_dir) / ".flux"
    shutil.rmtree(dot, ignore_errors=True)
    curve = dot / "curve"
    curve.mkdir(parents=True, mode=0o755)
    for directory in (dot, curve):
        chown(directory, site.guest)
    try:
        keygen = subprocess.run([sys.executable, "-m", "flux_imp.sign", "keygen",
                                 str(curve / "sig")],
                                preexec_fn=users.become(site.guest), capture_output=True,
                                check=False, cwd=TOP, env=ENV, timeout=60)  # fmt: skip
        assert keygen.returncode == 0, keygen.stderr
        yield curve
    finally:
        shutil.rmtree(dot, ignore_errors=True)


@pytest.fixture
def curve_site(site: Site) -> Iterator[Site]:
    """``site``, its signing config put back after (munge the default: the
    other tests sign J before they configure)."""
    try:
        yield site
    finally:
        site.configure(site.exec_table())


@pytest.fixture
def home_cert(curve_site: Site) -> Iterator[Path]:
    with guest_home_cert(curve_site) as curve:
        yield curve


@pytest.mark.parametrize("mode", ["home", "ca"])
def test_exec_curve_allowed_plan_is_what_the_job_got(curve_site: Site, mode: str,
                                                     world_tmp: Path) -> None:
    site = curve_site
    with contextlib.ExitStack() as stack:
        if mode == "home":
            stack.enter_context(guest_home_cert(site))
            curve = HOME_MODE
        else:  # no home cert: only the CA's word
            curve = ca_mode(world_tmp, site.guest)
        site.configure(site.exec_table(), ("curve",), curve)
        token = sign_as(site.guest, site.sign)
        got, report = agree(site, "exec", ["/bin/sh", "-c", REPORT], request(token))
    assert got.returncode == 0, got.stderr
    plan = report["plan"]
    assert plan["user"] == site.guest.pw_name
    matches_job(got, plan)
    assert report["facts"]["mechanism"] == "curve"


def test_exec_curve_ca_revoked_refused_by_the_privileged_half(curve_site: Site,
                                                              world_tmp: Path) -> None:
    # As test_harden_sign's: the owner cannot search the revoke-dir (its half
    # lets J through), root can: both ways refused by judge().
    site = curve_site
    site.configure(site.exec_table(), ("curve",), ca_mode(world_tmp, site.guest, revoked=True))
    got, report = agree(site, "exec", ["/bin/sh", "-c", "true"],
                        request(sign_as(site.guest, site.sign)))
    assert got.returncode != 0, got
    assert report["plan"] is None
    assert report["message"] == ("exec: signature validation failed: "
                                 "sign-curve-verify: ca: cert has been revoked")
    assert report["steps"][-1]["step"] == "privileged half: judge()"


EXPIRED = {"munge": "sign-munge-verify: max-ttl exceeded",
           "curve": "sign-curve-verify: xtime or max-ttl exceeded"}


@pytest.mark.parametrize("mechanism", ["munge", "curve"])
def test_exec_expired_j_refused(curve_site: Site, mechanism: str, home_cert: Path) -> None:
    site = curve_site
    # As test_exec's test_expired_j: a negative max-ttl, for the signer
    # (curve: xtime in the past) and for both verifiers.
    site.configure(site.exec_table(), (mechanism,), HOME_MODE, max_ttl=-100)
    got, report = agree(site, "exec", ["/bin/sh", "-c", "true"],
                        request(sign_as(site.guest, site.sign)))
    assert got.returncode != 0, got
    assert report["plan"] is None
    assert report["message"] == f"exec: signature validation failed: {EXPIRED[mechanism]}"


@pytest.mark.parametrize("case", ["symlink", "missing", "another cert"])
def test_exec_curve_home_cert_refusals_agree(curve_site: Site, case: str,
                                            home_cert: Path) -> None:
    site = curve_site
    site.configure(site.exec_table(), ("curve",), HOME_MODE)
    token = sign_as(site.guest, site.sign)
    pub = home_cert / "sig.pub"
    if case == "symlink":  # even to the guest's own, valid cert
        pub.rename(home_cert / "real.pub")
        pub.symlink_to("real.pub")
        chown(pub, site.guest)
    elif case == "missing":
        pub.unlink()
    else:  # not the cert that signed J
        Cert.create().store(str(home_cert / "sig"))
    got, report = agree(site, "exec", ["/bin/sh", "-c", "true"], request(token))
    assert got.returncode != 0, got
    assert report["plan"] is None
    why = ("cert verification failed" if case == "another cert"
           else f"error loading cert from {home_cert}/sig")
    assert report["message"] == f"exec: signature validation failed: sign-curve-verify: {why}"


# ------------------------------------------------------------------ run


def _script(world_tmp: Path, mode: int = 0o755) -> Path:
    path = world_tmp / "prolog"
    path.write_text("#!/bin/sh\nid -u; id -g; id -G; echo ---; env -0\n")
    path.chmod(mode)
    return path


def _run_table(site: Site, path: str, **extra: str) -> str:
    text = (f'[run.prolog]\nallowed-users = ["{site.owner.pw_name}"]\npath = "{path}"\n'
            'allowed-environment = ["FLUX_*", "FOO", "LD_*"]\n')
    return text + "".join(f"{k} = {v}\n" for k, v in extra.items())


def test_run_allowed_plan_is_what_the_script_got(site: Site, world_tmp: Path) -> None:
    site.configure(_run_table(site, str(_script(world_tmp))))
    env = {**ENV, "FOO": "1", "BAR": "2", "FLUX_JOB_ID": "f1", "LD_PRELOAD": "x"}
    got, report = agree(site, "run", ["prolog"], b"", env)
    plan = report["plan"]
    uid, gid, _, seen = job_saw(got.stdout)
    assert (uid, gid) == (plan["uid"], plan["gid"]) == (0, 0)
    assert {k: v for k, v in seen.items() if k not in SHELL_ADDS} == plan["env"]
    assert plan["env_refused"] == ["LD_PRELOAD"]
    hidden = dry(site, "run", ["prolog"], b"", env, "--json")
    assert json.loads(hidden.stdout)["plan"]["env"] == list(plan["env"])


@pytest.mark.parametrize("case", ["not allowed", "no such command", "no name",
                                  "relative path", "script world-writable", "no config",
                                  "no run table"])
def test_run_refusals_agree(site: Site, case: str, world_tmp: Path) -> None:
    script = _script(world_tmp, 0o777 if case == "script world-writable" else 0o755)
    table = _run_table(site, "prolog" if case == "relative path" else str(script))
    if case == "not allowed":
        table = table.replace(site.owner.pw_name, "someone-else")
    name = {"no such command": ["epilog"], "no name": []}.get(case, ["prolog"])
    imp = {"no config": None, "no run table": site.exec_table()}.get(case, table)
    site.configure(imp)
    got, report = agree(site, "run", name)
    assert got.returncode != 0
    assert report["plan"] is None


# ------------------------------------------------------------------ the command


def test_human_output_names_steps_and_hides_values(site: Site) -> None:
    site.configure(site.exec_table())
    stdin = request(sign_as(site.guest, site.sign))
    result = dry(site, "exec", ["/bin/sh", "-c", "true"], stdin, {**ENV, "SECRET": "hunter2"})
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert f"unprivileged half, as {site.owner.pw_name}" in text
    assert "privileged half: judge(): allowed" in text
    assert "SECRET" in text and "hunter2" not in text


def test_not_root_is_an_error(site: Site) -> None:
    result = subprocess.run(
        [sys.executable, "-c", runner(site), "dry-run", "run", "--owner", "root", "x"],
        capture_output=True, env=ENV, cwd="/", preexec_fn=users.become(site.owner), check=False)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1].startswith("flux-security: dry-run: must run")


def test_owner_root_refused_as_the_imp_does(site: Site) -> None:
    site.configure(site.exec_table())
    result = dry(site, "run", ["prolog"], b"", ENV).stderr.decode()
    assert result.splitlines()[-1].startswith("flux-security:")
    root = subprocess.run(
        [sys.executable, "-c", runner(site), "dry-run", "run", "--owner", "0",
         "--sysconfdir", str(site.root), "prolog"],
        capture_output=True, env=ENV, cwd="/", check=False)
    assert root.returncode == 1
    assert root.stderr.decode().splitlines()[-1] == "flux-security: Refusing to run as root"


def test_one_audit_record_marked_dry_run(site: Site, syslog: Any) -> None:
    site.configure(site.exec_table())
    args = ["/bin/sh", "-c", "true"]
    for stdin in (request(sign_as(site.guest, site.sign)), b"{bad"):
        before = len(syslog.records())
        subprocess.run(
            [sys.executable, "-c", runner(site), "dry-run", "exec", "--owner", site.owner.pw_name,
             "--sysconfdir", str(site.root), "--", *args],
            input=stdin, capture_output=True, env=ENV, cwd="/", check=False,
            preexec_fn=syslog.preexec())
        records = syslog.records()[before:]
        assert len(records) == 1, records
        assert ' half="dry-run" ' in records[0][1]
        assert f'owner="{site.owner.pw_name}"' in records[0][1]


def test_usage_error_is_2(site: Site) -> None:
    result = dry(site, "exec", [], b"", ENV)
    assert result.returncode == 2

