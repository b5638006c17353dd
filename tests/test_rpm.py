"""The RPM: `make -C packaging rpm` (packaging/rpm/build.sh), built once.

Checks what the package holds (setuid launcher, its lingering helper,
flux-sign, every module with valid byte code, man pages, license, config
files), what it requires, that the launcher's compiled-in paths match where
the modules and the helper went, and that rpmlint (with
packaging/rpm/flux-imp.rpmlintrc) reports no errors.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
DIST = TOP / "packaging" / "dist"
RPMLINTRC = TOP / "packaging" / "rpm" / "flux-imp.rpmlintrc"
HOST_PYTHON = "/usr/bin/python3"  # the %{python3} build.sh builds with


@dataclass(frozen=True)
class Entry:
    mode: str
    owner: str
    group: str
    path: str


@dataclass(frozen=True)
class Built:
    rpm: Path
    files: dict[str, Entry]  # rpm -qlvp, by path
    sitelib: str  # where flux_imp/ went
    pytag: str  # "311": the cpython-XY of the byte code
    build_seconds: float


def _rpm_query(rpm: Path, *args: str) -> list[str]:
    out = subprocess.run(
        ["rpm", "-qp", *args, str(rpm)], check=True, capture_output=True, text=True
    ).stdout
    return out.splitlines()


def _cannot_install_rpmbuild() -> str | None:
    """Why rpmbuild cannot be had here, or None if it can (maybe after apt)."""
    if shutil.which("rpmbuild") and shutil.which("rpmlint"):
        return None
    if shutil.which("apt-get") is None:
        return "rpmbuild/rpmlint are not installed and there is no apt-get"
    if os.getuid() != 0:
        return "rpmbuild/rpmlint are not installed and installing them needs root"
    return None


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    why = _cannot_install_rpmbuild()
    if why:
        print(f"test_rpm: skipped: {why}")
        pytest.skip(why)
    # build.sh keeps its work under TMPDIR and must leave nothing there.
    tmpdir = tmp_path_factory.mktemp("rpm-build-tmp")
    start = time.monotonic()
    proc = subprocess.run(
        ["make", "-C", str(TOP / "packaging"), "rpm"],
        env=dict(os.environ, TMPDIR=str(tmpdir)),
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        if shutil.which("rpmbuild") is None:
            why = "rpmbuild could not be installed (apt-get failed)"
            print(f"test_rpm: skipped: {why}\n{proc.stderr[-2000:]}")
            pytest.skip(why)
        pytest.fail(
            f"make -C packaging rpm failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    assert list(tmpdir.iterdir()) == [], "build.sh left files in TMPDIR"
    rpms = sorted(DIST.glob("flux-imp-*.rpm"))
    rpms = [r for r in rpms if not r.name.endswith(".src.rpm")]
    assert len(rpms) == 1, f"expected one binary flux-imp RPM in {DIST}: {rpms}"
    files = {}
    for line in _rpm_query(rpms[0], "-lv"):
        fields = line.split(None, 8)
        path = fields[8].split(" -> ")[0]
        files[path] = Entry(fields[0], fields[2], fields[3], path)
    init = [p for p in files if p.endswith("/flux_imp/__init__.py")]
    assert len(init) == 1, init
    sitelib = init[0][: -len("/flux_imp/__init__.py")]
    tags = {
        m.group(1)
        for p in files
        if (m := re.search(r"/flux_imp/__pycache__/__init__\.cpython-(\d+)\.pyc$", p))
    }
    assert len(tags) == 1, f"byte code of flux_imp/__init__.py: {tags}"
    yield Built(rpms[0], files, sitelib, tags.pop(), seconds)


@pytest.fixture(scope="module")
def payload(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The RPM's files, extracted with their modes and mtimes."""
    if shutil.which("rpm2cpio") is None or shutil.which("cpio") is None:
        pytest.skip("rpm2cpio and cpio are needed to look inside the RPM")
    root = tmp_path_factory.mktemp("rpm-payload")
    subprocess.run(
        f"rpm2cpio '{built.rpm}' | cpio -idmu --quiet", shell=True, check=True, cwd=root
    )
    return root


def _source_modules() -> list[Path]:
    pkg = TOP / "flux_imp"
    return sorted(
        p.relative_to(TOP) for p in pkg.rglob("*.py") if "__pycache__" not in p.parts
    )


def test_setuid_launcher(built: Built) -> None:
    e = built.files.get("/usr/libexec/flux/flux-imp")
    assert e is not None, "no /usr/libexec/flux/flux-imp"
    assert (e.mode, e.owner, e.group) == ("-rwsr-xr-x", "root", "root")


def test_lingering_helper_beside_the_launcher(built: Built) -> None:
    """flux-imp-proxy.c, which the root IMP execs while a job runs, under
    the name the process must keep (flux-imp): root's, 0755, never setuid."""
    e = built.files.get("/usr/libexec/flux-imp/flux-imp")
    assert e is not None, "no /usr/libexec/flux-imp/flux-imp"
    assert (e.mode, e.owner, e.group) == ("-rwxr-xr-x", "root", "root")


def test_flux_sign(built: Built) -> None:
    e = built.files.get("/usr/bin/flux-sign")
    assert e is not None, "no /usr/bin/flux-sign"
    assert (e.mode, e.owner, e.group) == ("-rwxr-xr-x", "root", "root")


def test_flux_security_and_its_flux_subcommand_link(built: Built) -> None:
    e = built.files.get("/usr/bin/flux-security")
    assert e is not None, "no /usr/bin/flux-security"
    assert (e.mode, e.owner, e.group) == ("-rwxr-xr-x", "root", "root")
    link = built.files.get("/usr/libexec/flux/cmd/flux-security")
    assert link is not None and link.mode.startswith("l"), link
    assert any(p.startswith("/usr/share/man/man8/flux-security.8") for p in built.files)


def test_modules_and_byte_code(built: Built) -> None:
    modules = _source_modules()
    assert modules, "no flux_imp sources found"
    missing = []
    for rel in modules:
        py = f"{built.sitelib}/{rel}"
        cache = f"{built.sitelib}/{rel.parent}/__pycache__/{rel.stem}.cpython-{built.pytag}"
        for want in (py, f"{cache}.pyc", f"{cache}.opt-1.pyc"):
            if want not in built.files:
                missing.append(want)
    assert missing == []
    assert f"{built.sitelib}/flux_imp/py.typed" in built.files


def test_byte_code_is_fresh(built: Built, payload: Path) -> None:
    """Each .pyc names its .py's mtime and size, so Python (run with -B by
    the launcher) uses it instead of compiling again; the magic number is
    the interpreter's and the code objects name the installed path."""
    magic = subprocess.run(
        [HOST_PYTHON, "-I", "-c", "import importlib.util as u; print(u.MAGIC_NUMBER.hex())"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    stale = []
    pycs = []
    for rel in _source_modules():
        py = payload / built.sitelib.lstrip("/") / rel
        st = py.stat()
        for suffix in (".pyc", ".opt-1.pyc"):
            pyc = py.parent / "__pycache__" / f"{rel.stem}.cpython-{built.pytag}{suffix}"
            head = pyc.read_bytes()[:16]
            want = (
                bytes.fromhex(magic)
                + (0).to_bytes(4, "little")
                + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
                + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
            )
            if head != want:
                stale.append(str(pyc.relative_to(payload)))
            pycs.append(pyc)
    assert stale == []
    # co_filename, read by the interpreter that wrote the byte code.
    check = (
        "import marshal, sys\n"
        "for p in sys.argv[1:]:\n"
        "    with open(p, 'rb') as f:\n"
        "        f.seek(16)\n"
        "        print(marshal.load(f).co_filename)\n"
    )
    names = subprocess.run(
        [HOST_PYTHON, "-I", "-c", check, *map(str, pycs)],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    wrong = [n for n in names if not n.startswith(f"{built.sitelib}/flux_imp/")]
    assert wrong == []


def test_launcher_paths_match_package(built: Built, payload: Path) -> None:
    data = (payload / "usr/libexec/flux/flux-imp").read_bytes()
    # SITEDIR is compiled in: it must be where the package puts flux_imp.
    assert built.sitelib.encode() in data, "launcher SITEDIR is not the package's sitelib"
    assert HOST_PYTHON.encode() + b"\0" in data
    # The helper it names is the one the package installs, an ELF binary.
    assert b',proxy="/usr/libexec/flux-imp/flux-imp")' in data
    assert (payload / "usr/libexec/flux-imp/flux-imp").read_bytes()[:4] == b"\x7fELF"


def test_man_pages(built: Built) -> None:
    pages = sorted((TOP / "man").glob("*.[158]"))
    sections = {p.suffix for p in pages}
    assert sections == {".1", ".5", ".8"}, f"man pages in the tree: {pages}"
    missing = []
    for page in pages:
        base = f"/usr/share/man/man{page.suffix[1:]}/{page.name}"
        if not any(p in built.files for p in (base, f"{base}.gz", f"{base}.bz2", f"{base}.xz")):
            missing.append(base)
    assert missing == []
    assert any(p.startswith("/usr/share/man/man1/flux-sign.1") for p in built.files)
    assert any(p.startswith("/usr/share/man/man8/flux-imp.8") for p in built.files)


def test_license_and_docs(built: Built) -> None:
    licenses = _rpm_query(built.rpm, "-L")
    assert "/usr/share/licenses/flux-imp/LICENSE" in licenses
    docs = _rpm_query(built.rpm, "-d")
    assert "/usr/share/doc/flux-imp/README.md" in docs
    assert "/usr/share/doc/flux-imp/examples/sign.toml" in docs


def test_config_files(built: Built) -> None:
    assert "/etc/flux/security/conf.d/sign.toml" in _rpm_query(built.rpm, "-c")
    flags = dict(
        line.split("|", 1)[::-1]
        for line in _rpm_query(built.rpm, "--qf", "[%{FILEFLAGS:fflags}|%{FILENAMES}\n]")
    )
    assert set(flags["/etc/flux/security/conf.d/sign.toml"]) >= {"c", "n"}  # noreplace
    for d in ("/etc/flux/imp/conf.d", "/etc/flux/security/conf.d"):
        e = built.files.get(d)
        assert e is not None and e.mode == "drwxr-xr-x" and e.owner == "root", d


def test_requires(built: Built) -> None:
    requires = {r.strip() for r in _rpm_query(built.rpm, "-R")}
    for dep in ("python3dist(pynacl)", "python3dist(click)", "python3dist(python-prctl)"):
        assert dep in requires, requires
    assert ("python3dist(tomli)" in requires) == (int(built.pytag) < 311)
    for name in ("munge-libs", "pam"):
        assert any(re.fullmatch(rf"{name}(\(.*\))?", r) for r in requires), requires


def test_rpmlint_clean(built: Built) -> None:
    proc = subprocess.run(
        ["rpmlint", "-r", str(RPMLINTRC), str(built.rpm)], capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    m = re.search(r"(\d+) errors, (\d+) warnings", out)
    assert m is not None, out
    assert m.group(1) == "0", out
    assert proc.returncode == 0, out
