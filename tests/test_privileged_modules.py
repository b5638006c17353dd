"""``flux_imp.PRIVILEGED_MODULES``, derived from the tree (the privileged
folder and the shared packages), names exactly the project modules whose
code runs with euid 0, and the unprivileged side never loads from the
privileged folder.

Every command (and exec with each kind of containment, each signing
mechanism and a refusal by the privileged half) runs through a real
setuid launcher, a production build (the config under its own SYSCONFDIR,
path checks on) with ``MODULE=tests.privileged_probe``: the IMP itself,
with a finder that logs every ``flux_imp`` module each of its processes
loads and whether that process had euid 0 then (tests/privileged_probe.py).
A module loaded with euid 0 in any run must be listed; a listed module
must be loaded with euid 0 in some run; a module of
``flux_imp/imp/privileged/`` must never be loaded without it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import flux_imp
from flux_imp.imp.privileged.contain import pam
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert

from . import impenv, users
from .containment_helpers import dedicated_cgroup, make_setup, outcome, start
from .jobs import SHELL, ExecSetup, sign_as, start_exec
from .signconf import ca_table, sign_table

PROBE = "tests.privileged_probe"
LISTED = frozenset(flux_imp.PRIVILEGED_MODULES)
PRIVILEGED_FOLDER = "flux_imp.imp.privileged"
UNPRIVILEGED_FOLDER = Path(flux_imp.__file__).parent / "imp" / "unprivileged"
# The sign config of the runs that are not about containment: every mechanism.
SIGN = sign_table("{default}", ["munge", "none", "curve"]) + """\
[sign.munge]
socket-path = "{socket}"
[sign.curve]
require-ca = false
"""


@dataclass(frozen=True)
class Loads:
    """The project modules one IMP run loaded, by privilege at the time."""

    root: frozenset[str]
    user: frozenset[str]


class Unavailable(Exception):
    """This machine cannot do that run (no PAM, no cgroup2...)."""


@dataclass
class Probe:
    """The probe launcher and what a run needs."""

    binary: Path
    sysconfdir: Path  # the binary's: its IMP and signing config
    log: Path
    owner: pwd.struct_passwd
    guest: pwd.struct_passwd
    munged: str
    tmp: Path

    def loads(self, run: Callable[[Probe, Path], None], name: str) -> Loads:
        """Run ``run`` (in a fresh directory of its own); the modules it loaded."""
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
        os.fchmod(fd, 0o666)  # the unprivileged processes log too
        os.close(fd)
        directory = self.tmp / name
        directory.mkdir(mode=0o755)
        run(self, directory)
        found: dict[str, set[str]] = {"root": set(), "user": set()}
        for line in self.log.read_text().splitlines():
            kind, _pid, module = line.split()
            found[kind].add(module)
        return Loads(frozenset(found["root"]), frozenset(found["user"]))

    def use(self, text: str) -> None:
        """Make ``text`` the IMP's config and its signing config."""
        for sub in ("imp", "security"):
            impenv.write_config(self.sysconfdir / "flux" / sub / "conf.d", text)

    def config(self, directory: Path, text: str) -> str:
        """use() ``text``, and write it in ``directory`` too, for J signed by
        the test; the pattern of the latter."""
        self.use(text)
        return impenv.write_config(directory / "conf.d", text)

    def install(self, setup: ExecSetup) -> ExecSetup:
        """``setup``, its config made the IMP's."""
        self.use(Path(setup.pattern).with_name("imp.toml").read_text())
        return setup

    def exec_setup(self, directory: Path, default: str = "munge") -> ExecSetup:
        """An exec config of our own: every mechanism allowed, ``default`` signs."""
        text = SIGN.format(default=default, socket=self.munged) + impenv.toml_table(
            "exec", {"allowed-users": [self.owner.pw_name], "allowed-shells": [SHELL]})
        return ExecSetup(self.binary, self.config(directory, text), self.owner, self.guest)

    def run(self, args: list[str], stdin: bytes = b"",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        return impenv.run(self.binary, args, as_user=users.become(self.owner), stdin=stdin,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


@pytest.fixture(scope="module")
def probe(imp: impenv.ImpInstall, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
          munged: str) -> Iterator[Probe]:
    """The probe launcher, setuid root, and its site, outside /tmp (which a
    private-tmp job does not see)."""
    top = Path(tempfile.mkdtemp(prefix="fluximp-privmods-", dir=imp.gate.path))  # /var/tmp
    try:
        os.chmod(top, 0o755)
        site = top / "site"
        impenv._make_site(site)
        (site / "tests").mkdir()
        for name in ("__init__.py", "privileged_probe.py"):
            shutil.copy(impenv.TOP / "tests" / name, site / "tests" / name)
        binary, sysconfdir = top / "libexec" / "flux-imp", top / "etc"
        impenv.build_launcher(site, binary, 0, str(sysconfdir), module=PROBE)
        impenv.make_setuid(binary)
        (top / "runs").mkdir(mode=0o755)
        yield Probe(binary, sysconfdir, site / "imports.log", owner, guest, munged, top / "runs")
    finally:
        shutil.rmtree(top)


# ------------------------------------------------------------------ the runs


def ok(result: subprocess.CompletedProcess[bytes], stdout: bytes | None = None) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    if stdout is not None:
        assert result.stdout == stdout


def ok_outcome(proc: subprocess.Popen[bytes], stdout: str = "ran\n") -> None:
    assert outcome(proc) == (0, stdout, "")


def run_version(probe: Probe, directory: Path) -> None:
    probe.exec_setup(directory)
    result = probe.run(["version"])
    assert result.returncode == 0, result.stderr


def run_whoami(probe: Probe, directory: Path) -> None:
    probe.exec_setup(directory)
    result = probe.run(["whoami"])
    ok(result)
    assert b"flux-imp: privileged: " in result.stdout


def exec_as_owner(probe: Probe, setup: ExecSetup, token: str, stdout: str) -> None:
    proc = start_exec(setup, ["-c", "id -un"], token=token)
    ok_outcome(proc, stdout)


def run_exec_munge(probe: Probe, directory: Path) -> None:
    setup = probe.exec_setup(directory)
    exec_as_owner(probe, setup, sign_as(probe.guest, setup.pattern), f"{probe.guest.pw_name}\n")


def run_exec_none(probe: Probe, directory: Path) -> None:
    setup = probe.exec_setup(directory, default="none")  # none: signed by the caller
    exec_as_owner(probe, setup, sign_as(probe.owner, setup.pattern), f"{probe.owner.pw_name}\n")


def run_exec_curve(probe: Probe, directory: Path) -> None:
    setup = probe.exec_setup(directory, default="curve")
    guest, home = probe.guest, Path(probe.guest.pw_dir)
    for sub in (home / ".flux", home / ".flux" / "curve"):
        sub.mkdir(exist_ok=True)
        os.chown(sub, guest.pw_uid, guest.pw_gid)
    for name in ("sig", "sig.pub"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(home / ".flux" / "curve" / name)
    keygen = subprocess.run([sys.executable, "-m", "flux_imp.sign", "keygen",
                             str(home / ".flux" / "curve" / "sig")], cwd=impenv.TOP,
                            preexec_fn=users.become(guest), capture_output=True, check=False)
    assert keygen.returncode == 0, keygen.stderr
    exec_as_owner(probe, setup, sign_as(guest, setup.pattern), f"{guest.pw_name}\n")


def run_exec_refused_by_the_privileged_half(probe: Probe, directory: Path) -> None:
    setup = probe.exec_setup(directory)
    proc = start_exec(setup, ["-c", "echo ran"], token=sign_as(pwd.getpwuid(0), setup.pattern))
    assert outcome(proc) == (1, "", "flux-imp: Fatal: exec: switching to user root not supported\n")


def containment_setup(probe: Probe, directory: Path, extra: str) -> ExecSetup:
    return probe.install(make_setup(probe.binary, probe.munged, probe.owner, probe.guest,
                                    directory, extra))


def run_exec_cgroup(probe: Probe, directory: Path) -> None:
    with cgroup() as parent:
        setup = containment_setup(probe, directory, f'[exec.cgroup]\nparent = "{parent}"\n')
        ok_outcome(start(setup, "echo ran", directory))


def run_exec_private_tmp(probe: Probe, directory: Path) -> None:
    setup = containment_setup(probe, directory, '[exec.private-tmp]\nsize = "1m"\n')
    ok_outcome(start(setup, "ls -A /tmp; echo ran", directory, jobid=None))


def run_exec_devices(probe: Probe, directory: Path) -> None:
    setup = containment_setup(probe, directory, "")
    rules = {"DevicePolicy": "strict", "DeviceAllow": [["/dev/null", "rw"]]}
    with cgroup() as where:
        ok_outcome(start(setup, "echo ran >/dev/null && echo ran", directory, cgroup=where,
                         opts=rules))


def run_exec_pam(probe: Probe, directory: Path) -> None:
    if pam.load() is None:
        raise Unavailable("libpam.so.0 is not installed")
    stack = directory / "pam.d"
    stack.mkdir()
    (stack / "flux").write_text("auth required pam_permit.so\nsession required pam_permit.so\n")
    setup = containment_setup(probe, directory, "pam-support = true\n")
    ok_outcome(start(setup, "echo ran", directory, binds={str(stack): "/etc/pam.d"}))


def run_run(probe: Probe, directory: Path) -> None:
    script = directory / "command.sh"
    script.write_text('#!/bin/sh\necho "ran $FLUXIMP_PROBE"\n')
    script.chmod(0o755)
    # A bracket in a pattern: the privileged half re-matches the forwarded
    # names with it (conf/cbracket.py).
    table = {"allowed-users": [probe.owner.pw_name], "path": str(script),
             "allowed-environment": ["FLUXIMP_[P]ROBE"]}
    probe.config(directory, impenv.toml_table("run.test", table))
    ok(probe.run(["run", "test"], env={"FLUXIMP_PROBE": "1"}), b"ran 1\n")


def run_casign(probe: Probe, directory: Path) -> None:
    table = ca_table(directory)
    authority = CA(table)
    authority.keygen()
    authority.store()  # root's: only the privileged half can sign
    probe.config(directory, impenv.toml_table("ca", table))
    result = probe.run(["casign"], stdin=Cert.create().dumps().encode())
    ok(result)
    assert Cert.loads(result.stdout).meta.get_int("userid") == probe.owner.pw_uid


@contextlib.contextmanager
def cgroup() -> Iterator[Path]:
    """A dedicated test cgroup, or Unavailable."""
    try:
        manager = dedicated_cgroup()
        path = manager.__enter__()
    except pytest.skip.Exception as exc:
        raise Unavailable(str(exc)) from None
    try:
        yield path
    finally:
        manager.__exit__(None, None, None)


RUNS: dict[str, Callable[[Probe, Path], None]] = {
    "version": run_version,
    "whoami": run_whoami,
    "exec": run_exec_munge,
    "exec-none": run_exec_none,
    "exec-curve": run_exec_curve,
    "exec-refused": run_exec_refused_by_the_privileged_half,
    "exec-cgroup": run_exec_cgroup,
    "exec-private-tmp": run_exec_private_tmp,
    "exec-devices": run_exec_devices,
    "exec-pam": run_exec_pam,
    "run": run_run,
    "casign": run_casign,
}


Found = dict[str, "Loads | Unavailable | AssertionError"]


@pytest.fixture(scope="module")
def loads(probe: Probe) -> Found:
    """Each run's loads, or why this machine cannot do it, or how it failed."""
    found: Found = {}
    for name, run in RUNS.items():
        try:
            found[name] = probe.loads(run, name)
        except (Unavailable, AssertionError) as exc:
            found[name] = exc
    return found


def of(loads: Found, name: str) -> Loads:
    got = loads[name]
    if isinstance(got, Unavailable):
        pytest.skip(str(got))
    if isinstance(got, AssertionError):
        raise got
    return got


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("name", list(RUNS))
def test_every_module_loaded_as_root_is_listed(loads: Found, name: str) -> None:
    got = of(loads, name)
    assert "flux_imp.imp.main" in got.root  # the probe saw the privileged parent
    unlisted = sorted(got.root - LISTED)
    assert not unlisted, f"loaded with euid 0, not in PRIVILEGED_MODULES: {unlisted}"


@pytest.mark.parametrize("name", [name for name in RUNS if name.startswith("exec")])
def test_the_probe_sees_the_unprivileged_child(loads: Found, name: str) -> None:
    """The child parses the JSON input: proof that its loads are seen and
    told apart (and jsonin is the child's alone)."""
    got = of(loads, name)
    assert "flux_imp.imp.unprivileged.jsonin" in got.user
    assert "flux_imp.imp.unprivileged.jsonin" not in got.root


def test_every_listed_module_is_loaded_as_root_by_some_run(
    loads: Found
) -> None:
    union = frozenset().union(*(of(loads, name).root for name in RUNS))
    unused = sorted(LISTED - union)
    assert not unused, f"in PRIVILEGED_MODULES, never loaded with euid 0: {unused}"


def test_the_list_names_real_modules_once() -> None:
    names = list(flux_imp.PRIVILEGED_MODULES)
    assert len(names) == len(set(names))
    assert PRIVILEGED_FOLDER + ".exec" in names and "flux_imp.sign.token" in names
    assert not [n for n in names if n.startswith("flux_imp.imp.unprivileged")]
    for path in flux_imp.PRIVILEGED_SOURCES:
        assert (impenv.TOP / path).is_file(), path


@pytest.mark.parametrize("name", list(RUNS))
def test_the_unprivileged_side_never_loads_the_privileged_folder(
    loads: Found, name: str
) -> None:
    got = of(loads, name)
    loaded = sorted(m for m in got.user if m.startswith(PRIVILEGED_FOLDER))
    assert not loaded, f"loaded without euid 0 from the privileged folder: {loaded}"


def test_no_unprivileged_module_imports_the_privileged_folder() -> None:
    """Also where no run goes: by the text of every import there."""
    for path in sorted(UNPRIVILEGED_FOLDER.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if code.split()[:1] in (["from"], ["import"]) and "privileged" in code.replace(
                    "unprivileged", ""):
                pytest.fail(f"{path}:{number}: {line.strip()}")
