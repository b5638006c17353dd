"""Issue 9 hardening of the setuid launcher (packaging/launcher/flux-imp.c),
through real setuid builds run by real users:

* nothing root imports can be changed by anyone but root: the import guard
  judges every module file Python loads as root, its bytecode and every
  directory above them, standard library and dependencies included; and
  PYTHON must be a binary, not a script (item 10);
* a test build behaves like upstream's: with FLUX_IMP_CONFIG_PATTERN unset
  it reads its compiled-in TEST_CONFDIR, and a real-uid-0 caller's
  LD_PRELOAD and PAM_WRAPPER* reach the interpreter (item 14);
* no other local user can run a setuid build of the suite (item 15).
"""

from __future__ import annotations

import compileall
import errno
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import impenv, users
from .test_launcher import (
    PROBE,
    PYTHON,
    VENV_SITE,
    _gcc,
    _normalize_modes,
    build,
    make_site,
    refused,
    report_of,
    run,
    run_make,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CFFI_BACKEND = sorted(Path(VENV_SITE).glob("_cffi_backend.*"))[0].name
# Imports made as root by the probe (nacl needs _cffi_backend).
IMPORTS = ["--probe-import=flux_imp.imp.main", "--probe-import=nacl.bindings"]


@pytest.fixture
def top(setuid_gate: impenv.Gate) -> Iterator[Path]:
    """A fresh directory in the gate, for one test's builds."""
    _gcc()
    with impenv.gated_dir(setuid_gate, "fluximp-harden-") as path:
        yield path


@pytest.fixture
def site(top: Path) -> Path:
    """A SITEDIR with this tree's flux_imp and the probe (tests/test_launcher.py)."""
    return make_site(top / "site")


def compiled_site(dest: Path, *deps: str) -> Path:
    """make_site() with copies of the venv's ``deps``, byte-compiled as a
    package install is, root-owned and writable by root only."""
    site = make_site(dest)
    for name in deps:
        source = Path(VENV_SITE) / name
        if source.is_dir():
            shutil.copytree(source, site / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, site / name)
    if not compileall.compile_dir(site, quiet=1):
        raise RuntimeError(f"byte-compiling {site} failed")
    _normalize_modes(site)
    return site


def bytecode(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


# ------------------------------------------------------ item 10: imports


@pytest.mark.parametrize(("spoil", "mode"), [
    ("flux_imp/imp/main.py", 0o666),  # a module, world-writable
    ("flux_imp/imp", 0o777),  # its package directory
    ("flux_imp/imp/__pycache__", 0o775),  # root reads bytecode even with -B
    ("pyc of flux_imp/imp/main.py", 0o664),
    ("flux_imp/imp/guard.py", 0o664),  # judged by the launcher, before any Python
    ("pyc of flux_imp/imp/guard.py", 0o666),
    ("flux_imp/imp/loader.py", 0o664),  # loaded by path, before the rest
    ("pyc of flux_imp/imp/loader.py", 0o666),
    ("pyc of flux_imp/__init__.py", 0o664),  # the package: the loader's, from SITEDIR
    ("nacl", 0o777),  # a dependency
    ("nacl/_sodium.abi3.so", 0o775),  # an extension module
    (CFFI_BACKEND, 0o757),  # a top-level extension module in SITEDIR
])  # fmt: skip
def test_root_imports_nothing_others_can_change(
    spoil: str, mode: int, top: Path, guest: pwd.struct_passwd
) -> None:
    site = compiled_site(top / "site", "nacl", CFFI_BACKEND)
    exe = build(top / "flux-imp", sitedir=site)
    assert report_of(run(exe, IMPORTS, user=guest))["resuid"][1] == 0  # sound: it runs
    target = site / spoil
    if spoil.startswith("pyc of "):
        target = bytecode(site / spoil.removeprefix("pyc of "))
    target.chmod(mode)
    refused(run(exe, IMPORTS, user=guest), target)


def test_a_stale_guard_pyc_others_could_change_is_refused_too(
    top: Path, guest: pwd.struct_passwd
) -> None:
    """Byte code of the guard for another interpreter (a Python upgrade
    leaves one): the launcher judges every guard.*.pyc there is."""
    site = compiled_site(top / "site", "nacl", CFFI_BACKEND)
    exe = build(top / "flux-imp", sitedir=site)
    other = bytecode(site / "flux_imp/imp/guard.py").with_name("guard.cpython-399.pyc")
    other.write_bytes(b"")
    other.chmod(0o666)
    refused(run(exe, IMPORTS, user=guest), other)


def test_a_guard_others_could_change_never_runs(top: Path, guest: pwd.struct_passwd) -> None:
    """Judged by the launcher before Python starts: the guard would judge
    itself too, but only once it had run."""
    site = compiled_site(top / "site", "nacl", CFFI_BACKEND)
    exe = build(top / "flux-imp", sitedir=site)
    guard, marker = site / "flux_imp/imp/guard.py", top / "guard-ran"
    guard.write_text(f"open({str(marker)!r}, 'w').close()\n" + guard.read_text())
    guard.chmod(0o666)
    refused(run(exe, IMPORTS, user=guest), guard)
    assert not marker.exists()


def test_the_guard_loads_nothing_from_a_file_before_it_guards(site: Path) -> None:
    """guard.py runs before it replaces the path finder: whatever it
    imported from a file then (``from __future__``, say) would not be
    judged before it ran."""
    probe = (
        "import sys\n"
        "from _frozen_importlib_external import spec_from_file_location\n"
        "from _frozen_importlib import _load\n"
        "before = set(sys.modules)\n"
        f"_load(spec_from_file_location('flux_imp.imp.guard', '{site}/flux_imp/imp/guard.py'))\n"
        "new = [sys.modules[name] for name in set(sys.modules) - before]\n"
        "print(sorted(m.__name__ for m in new if m.__spec__.has_location))\n"
    )
    result = subprocess.run([PYTHON, "-I", "-S", "-B", "-c", probe], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "['flux_imp.imp.guard']"  # builtin modules at most


def test_symlinked_dependency_is_judged_where_it_leads(
    top: Path, guest: pwd.struct_passwd
) -> None:
    """SITEDIR/nacl links to a directory the guest can rename entries of."""
    site = compiled_site(top / "site", CFFI_BACKEND)
    theirs = top / "guest-owned"
    theirs.mkdir()
    shutil.copytree(Path(VENV_SITE) / "nacl", theirs / "nacl")
    _normalize_modes(theirs)
    os.chown(theirs, guest.pw_uid, guest.pw_gid)
    (site / "nacl").symlink_to(theirs / "nacl")
    exe = build(top / "flux-imp", sitedir=site)
    refused(run(exe, ["--probe-import=nacl.bindings"], user=guest), theirs)


def fake_python(top: Path, copied: str) -> Path:
    """A copy of PYTHON whose standard library is the real one, linked entry
    by entry, except ``copied``: a copy of its own, to spoil."""
    lib = top / "py" / "lib" / STDLIB.name
    lib.mkdir(parents=True)
    for entry in STDLIB.iterdir():
        if entry.name == copied:
            shutil.copytree(entry, lib / entry.name, symlinks=True)
        else:
            (lib / entry.name).symlink_to(entry)
    (top / "py" / "bin").mkdir()
    python = top / "py" / "bin" / Path(PYTHON).name
    shutil.copy2(PYTHON, python)
    _normalize_modes(top / "py")
    python.chmod(0o755)
    return python


@pytest.mark.parametrize(("copied", "spoil"), [
    ("json", "json/__init__.py"),  # imported by the probe, through the guard
    ("encodings", "encodings/utf_8.py"),  # loaded while Python starts: judged first
])  # fmt: skip
def test_standard_library_is_judged_too(
    copied: str, spoil: str, top: Path, guest: pwd.struct_passwd, site: Path
) -> None:
    python = fake_python(top, copied)
    exe = build(top / "flux-imp", python=str(python), sitedir=site)
    report = report_of(run(exe, user=guest))
    assert report["modules"]["flux_imp"] == f"{site}/flux_imp/__init__.py"
    assert f"{top}/py/lib/{STDLIB.name}" in report["path"]  # its own library
    target = top / "py" / "lib" / STDLIB.name / spoil
    target.chmod(0o664)
    refused(run(exe, user=guest), target)


def test_interpreter_must_be_a_binary(top: Path, guest: pwd.struct_passwd, site: Path) -> None:
    """A "#!" script would have the kernel run an interpreter nothing checked."""
    script = top / "python3"
    script.write_text(f"#!{PYTHON}\n")
    script.chmod(0o755)
    exe = build(top / "flux-imp", python=str(script), sitedir=site)
    proc = run(exe, user=guest)
    assert (proc.returncode, proc.stdout) == (1, b"")
    assert proc.stderr == f"flux-imp: Fatal: {script}: not an ELF executable\n".encode()


# -------------------------------------------------- item 14: test builds


def test_test_build_reads_its_compiled_in_config_dir(
    imp: impenv.ImpInstall, owner: pwd.struct_passwd
) -> None:
    """No FLUX_IMP_CONFIG_PATTERN: packaging/launcher/test-imp.conf.d, which
    allows sudo (real uid 0 and SUDO_USER), as upstream's imp.conf.d."""
    result = impenv.run(imp.test_build, ["whoami"],
                        env={"PATH": "/usr/bin:/bin", "SUDO_USER": owner.pw_name})
    assert result.returncode == 0, result.stderr
    assert f"flux-imp: unprivileged: uid={owner.pw_uid} ".encode() in result.stdout


def test_make_test_confdir(top: Path, owner: pwd.struct_passwd, site: Path) -> None:
    confdir = top / "conf.d"
    impenv.write_config(confdir, 'log-level = "bogus"\n')
    exe = top / "flux-imp"
    made = run_make(f"PYTHON={PYTHON}", f"SITEDIR={site}", "TEST_BUILD=1",
                    f"TEST_CONFDIR={confdir}", f"OUT={exe}")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert f',test_pattern="{confdir}/*.toml")\0'.encode() in exe.read_bytes()
    impenv.make_setuid(exe)
    result = impenv.run(exe, ["version"], as_user=users.become(owner))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"flux-imp: Warning: unknown log-level 'bogus', ignoring\n"


@pytest.mark.parametrize("bad", ["relative/conf.d", "/conf d", '/x"y', ""])
def test_make_rejects_unsafe_test_confdir(bad: str, tmp_path: Path) -> None:
    _gcc()
    out = tmp_path / "flux-imp"
    made = run_make(f"PYTHON={PYTHON}", f"SITEDIR={VENV_SITE}", "TEST_BUILD=1",
                    f"TEST_CONFDIR={bad}", f"OUT={out}")  # fmt: skip
    assert made.returncode != 0
    assert "TEST_CONFDIR must be an absolute path" in made.stderr
    assert not out.exists()


def test_installed_build_without_pattern_reads_sysconfdir(
    imp: impenv.ImpInstall, owner: pwd.struct_passwd, world_tmp: Path
) -> None:
    etc = world_tmp / "etc"
    impenv.write_config(etc / "flux" / "imp" / "conf.d", 'log-level = "bogus"\n')
    for sub in (etc, etc / "flux", etc / "flux" / "imp"):
        sub.chmod(0o755)
    binary = impenv.build_installed(imp, imp.prefix / "flux-imp-unset", str(etc))
    result = impenv.run(binary, ["version"], as_user=users.become(owner))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b"flux-imp: Warning: unknown log-level 'bogus', ignoring\n"


PAM_WRAPPER_ENV = {"PAM_WRAPPER": "1", "PAM_WRAPPER_SERVICE_DIR": "/srv/pam.d",
                   "PAM_WRAPPER_DEBUGLEVEL": "0"}  # fmt: skip


@pytest.fixture
def preload(top: Path) -> Path:
    """A do-nothing library to LD_PRELOAD (the probe reports what is mapped)."""
    source = top / "preload.c"
    source.write_text("int fluximp_preloaded;\n")
    lib = top / "preload.so"
    subprocess.run([_gcc(), "-shared", "-fPIC", "-o", str(lib), str(source)], check=True)
    lib.chmod(0o755)
    return lib


def wrapper_env(preload: Path) -> dict[bytes, bytes]:
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(preload), "PAM_WRAPPERX": "no",
           "OTHER": "no", **PAM_WRAPPER_ENV}  # fmt: skip
    return {k.encode(): v.encode() for k, v in env.items()}


def test_real_uid_0_caller_of_a_test_build_passes_pam_wrapper_env(
    top: Path, site: Path, preload: Path
) -> None:
    """As upstream's test build under sudo, where glibc's secure mode is off."""
    exe = build(top / "flux-imp", sitedir=site)
    report = report_of(run(exe, user=None, env=wrapper_env(preload)))
    assert report["environ"] == {"LC_ALL": "C.UTF-8", "LD_PRELOAD": str(preload),
                                 **PAM_WRAPPER_ENV}  # fmt: skip
    assert str(preload) in report["mapped"]  # the interpreter loaded it


def test_installed_build_never_passes_pam_wrapper_env(
    top: Path, site: Path, preload: Path
) -> None:
    exe = top / "flux-imp"
    made = run_make(f"PYTHON={PYTHON}", f"SITEDIR={site}", f"MODULE={PROBE}", "TEST_BUILD=0",
                    f"OUT={exe}")  # fmt: skip
    assert made.returncode == 0, made.stderr
    impenv.make_setuid(exe)
    report = report_of(run(exe, user=None, env=wrapper_env(preload)))
    assert report["environ"] == {"LC_ALL": "C.UTF-8"}
    assert str(preload) not in report["mapped"]


def test_other_callers_of_a_test_build_never_pass_pam_wrapper_env(
    top: Path, site: Path, preload: Path, guest: pwd.struct_passwd
) -> None:
    exe = build(top / "flux-imp", sitedir=site)
    report = report_of(run(exe, user=guest, env=wrapper_env(preload)))
    assert report["environ"] == {"LC_ALL": "C.UTF-8"}
    assert str(preload) not in report["mapped"]
    names = {entry.split("=", 1)[0] for entry in report["launch"]["environ"]}
    assert set(PAM_WRAPPER_ENV) <= names  # data for the IMP, as any variable
    assert "LD_PRELOAD" not in names  # glibc's secure mode removed it


# ------------------------------------------- item 15: who can run builds


@pytest.fixture(scope="module")
def stranger() -> Iterator[pwd.struct_passwd]:
    """An ordinary local user: none of the users the suite runs the IMP as."""
    if os.getuid() != 0:
        pytest.skip("creating users needs root")
    with users.world_dir() as base, users.temp_user("fluximp-stranger", base / "home") as user:
        yield user


def setuid_files(top: Path) -> list[Path]:
    return sorted(path for path in top.rglob("*")
                  if not path.is_symlink() and path.is_file()
                  and path.stat().st_mode & stat.S_ISUID)  # fmt: skip


def test_other_local_users_cannot_run_any_setuid_build(
    imp: impenv.ImpInstall, setuid_gate: impenv.Gate, top: Path, site: Path,
    stranger: pwd.struct_passwd, owner: pwd.struct_passwd, world_tmp: Path,
) -> None:  # fmt: skip
    probe = build(top / "flux-imp", sitedir=site)  # as tests/test_launcher.py builds them
    builds = setuid_files(setuid_gate.path)
    assert {imp.test_build, imp.installed, probe} <= set(builds)
    for path in builds:
        with pytest.raises(PermissionError) as denied:
            subprocess.run([str(path), "version"], preexec_fn=users.become(stranger),
                           capture_output=True, timeout=60, check=False)  # fmt: skip
        assert denied.value.errno == errno.EACCES, path
    # The test users still can, with no supplementary group (users.become()).
    pattern = impenv.write_config(world_tmp / "conf.d", "")
    ran = impenv.run(imp.test_build, ["version"], as_user=users.become(owner),
                     env={"FLUX_IMP_CONFIG_PATTERN": pattern})  # fmt: skip
    assert ran.returncode == 0, ran.stderr


def test_make_setuid_refuses_a_place_others_can_reach(world_tmp: Path) -> None:
    path = world_tmp / "flux-imp"
    path.write_bytes(b"")
    with pytest.raises(RuntimeError, match="every user can run"):
        impenv.make_setuid(path)
    assert not path.stat().st_mode & stat.S_ISUID
