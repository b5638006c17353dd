"""Stand-ins for Fedora's pyproject-rpm-macros and python-rpm-macros helpers.

Used only by packaging/rpm/standin.macros, which build.sh loads when rpmbuild
runs on a host without Fedora's Python macros (Debian 12).  Each subcommand
does what the Fedora macro of the same purpose does, with the host's Python:

  buildrequires  %pyproject_buildrequires: [build-system] requires as
                 python3dist() names (never checked: build.sh uses --nodeps)
  wheel          %pyproject_wheel: pip wheel --no-deps --no-build-isolation
  install        %pyproject_install: pip install --root the wheel, fix
                 shebangs, INSTALLER=rpm, keep RECORD for save-files, drop it
  save-files     %pyproject_save_files: %{pyproject_files} from that RECORD
                 (%dir for package dirs, a .pyc glob per .py, %license)
  shebang-fix    %py3_shebang_fix
  bytecompile    brp-python-bytecompile: .pyc at optimisation levels 0 and 1

Runs on the build host's Python (3.9 or newer), standard library only.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env)


def _in_root(buildroot: Path, path: PurePosixPath) -> Path:
    return buildroot / path.relative_to("/")


def _requirement_to_rpm(req: str) -> str | None:
    """'setuptools>=61' -> 'python3dist(setuptools) >= 61' (no markers, extras)."""
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)", req)
    if m is None:
        return None
    name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
    spec = m.group(2).strip()
    first = spec.split(",")[0].strip()
    op = re.match(r"^(==|>=|<=|~=|>|<)\s*(\S+)$", first)
    if op is None:
        return f"python3dist({name})"
    rpmop = ">=" if op.group(1) == "~=" else op.group(1).replace("==", "=")
    return f"python3dist({name}) {rpmop} {op.group(2)}"


def cmd_buildrequires(args: argparse.Namespace) -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]
    with open("pyproject.toml", "rb") as f:
        data: dict[str, dict[str, list[str]]] = tomllib.load(f)
    requires = data.get("build-system", {}).get("requires", [])
    print("python3-devel")
    print("python3dist(pip) >= 19")
    for req in requires:
        line = _requirement_to_rpm(req)
        if line:
            print(line)


def cmd_wheel(args: argparse.Namespace) -> None:
    os.makedirs(args.builddir, exist_ok=True)
    env = dict(os.environ, TMPDIR=args.builddir)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--wheel-dir", args.wheeldir,
         "--no-deps", "--use-pep517", "--no-build-isolation",
         "--disable-pip-version-check", "--no-clean", "--progress-bar", "off",
         "--verbose", "."],
        env,
    )


def _shebang_fix(files: list[Path], python: str, opts: str) -> None:
    interp = f"#!{python} {opts}".rstrip() + "\n"
    for path in files:
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        first, _, rest = data.partition(b"\n")
        if re.match(rb"^#!\s*\S*python[0-9.]*(\s.*)?$", first):
            path.write_bytes(interp.encode() + rest)
            print(f"shebang of {path} set to {interp.strip()}", file=sys.stderr)


def cmd_shebang_fix(args: argparse.Namespace) -> None:
    _shebang_fix([Path(p) for p in args.files], args.python, args.opts)


def cmd_install(args: argparse.Namespace) -> None:
    buildroot = Path(args.buildroot)
    wheels = sorted(Path(args.wheeldir).glob("*.whl"))
    if len(wheels) != 1:
        sys.exit(f"pyproject_install: expected one wheel in {args.wheeldir}, found {len(wheels)}")
    name, version = wheels[0].name.split("-")[:2]
    os.makedirs(args.builddir, exist_ok=True)
    # Debian's sysconfig puts a non-venv --prefix /usr install under
    # /usr/local unless told to use its system layout (what Debian's own
    # package builds do); %{python3_sitelib} is that layout's purelib.
    env = dict(os.environ, TMPDIR=args.builddir, DEB_PYTHON_INSTALL_LAYOUT="deb")
    _run(
        [sys.executable, "-m", "pip", "install", "--root", str(buildroot),
         "--prefix", args.prefix, "--no-deps", "--disable-pip-version-check",
         "--progress-bar", "off", "--verbose", "--ignore-installed",
         "--no-warn-script-location", "--no-index", "--no-cache-dir",
         "--find-links", args.wheeldir, f"{name}=={version}"],
        env,
    )
    bindir = _in_root(buildroot, PurePosixPath(args.bindir))
    if bindir.is_dir():
        _shebang_fix(sorted(bindir.iterdir()), args.python, args.shebang_opts)
        shutil.rmtree(bindir / "__pycache__", ignore_errors=True)
    records: dict[str, list[str]] = {}
    for site in sorted({args.sitelib, args.sitearch}):
        sitedir = PurePosixPath(site)
        for distinfo in sorted(_in_root(buildroot, sitedir).glob("*.dist-info")):
            installer = distinfo / "INSTALLER"
            if installer.exists():
                installer.write_text("rpm\n")
            record = distinfo / "RECORD"
            paths: list[str] = []
            with open(record, newline="") as f:
                for row in csv.reader(f):
                    if row:
                        paths.append(os.path.normpath(os.path.join(site, row[0])))
            records[str(sitedir / distinfo.name / "RECORD")] = paths
            record.unlink()
            (distinfo / "REQUESTED").unlink(missing_ok=True)
    if not records:
        sys.exit(f"pyproject_install: no dist-info under {args.sitelib} or {args.sitearch}")
    Path(args.record).write_text(json.dumps(records, indent=1) + "\n")


def _pyc_glob(py: PurePosixPath, pyver: str) -> str:
    return str(py.parent / "__pycache__" / f"{py.stem}.cpython-{pyver}{{,.opt-?}}.pyc")


def cmd_save_files(args: argparse.Namespace) -> None:
    buildroot = Path(args.buildroot)
    pyver = "".join(args.python_version.split(".")[:2])
    sitedirs = [PurePosixPath(s) for s in sorted({args.sitelib, args.sitearch})]
    globs = []
    for g in args.globs:
        if g.startswith("+") or "." in g or "/" in g:
            sys.exit(f"pyproject_save_files: unsupported argument: {g}")
        globs.append(g)
    records: dict[str, list[str]] = json.loads(Path(args.record).read_text())
    if len(records) != 1:
        sys.exit("pyproject_save_files: expected exactly one dist-info RECORD")
    ((record_path, record_files),) = records.items()
    distinfo = PurePosixPath(record_path).parent
    meta = HeaderParser().parsestr(_in_root(buildroot, distinfo / "METADATA").read_text())
    license_files = set(meta.get_all("License-File") or [])

    lines: set[str] = {f"%dir {distinfo}"}
    modules: dict[str, set[str]] = {}
    have_license = False
    for name in record_files:
        path = PurePosixPath(name)
        if path.suffix == ".pyc":
            continue  # bytecode: one glob per .py below
        if distinfo in path.parents:
            if path.parent == distinfo and path.name in ("RECORD", "REQUESTED"):
                continue
            rel = path.relative_to(distinfo)
            if str(rel) in license_files or (
                rel.parts[0] == "licenses" and str(PurePosixPath(*rel.parts[1:])) in license_files
            ):
                lines.add(f"%license {path}")
                have_license = True
            else:
                lines.add(str(path))
            for parent in path.parents:
                if parent == distinfo:
                    break
                lines.add(f"%dir {parent}")
            continue
        site = next((s for s in sitedirs if s in path.parents), None)
        if site is None:
            continue  # e.g. %{_bindir}: the spec lists those itself
        rel = path.relative_to(site)
        top = rel.parts[0] if len(rel.parts) > 1 else rel.stem.split(".")[0]
        entries = modules.setdefault(top, set())
        for parent in path.parents:
            if parent == site:
                break
            entries.add(f"%dir {parent}")
        entries.add(str(path))
        if path.suffix == ".py":
            entries.add(_pyc_glob(path, pyver))
            if len(rel.parts) > 1:
                entries.add(f"%dir {path.parent / '__pycache__'}")
    for g in globs:
        matched = [m for m in modules if _MODULE_NAME.match(m) and fnmatch.fnmatchcase(m, g)]
        if not matched:
            sys.exit(f"pyproject_save_files: glob did not match any module: {g}")
        for m in matched:
            lines.update(modules[m])
    if args.assert_license and not have_license:
        sys.exit("pyproject_save_files: no License-File in the metadata")
    for line in lines:
        path_text = line.split(" ", 1)[1] if line.startswith("%") else line
        if any(c in path_text for c in " \t\"%[]"):
            sys.exit(f"pyproject_save_files: path needs quoting, unsupported: {path_text!r}")
    Path(args.output_files).write_text("\n".join(sorted(lines)) + "\n")


def cmd_bytecompile(args: argparse.Namespace) -> None:
    buildroot = Path(args.buildroot)
    dirs = [str(d) for d in (_in_root(buildroot, PurePosixPath(s)) for s in args.dirs)
            if d.is_dir()]
    if not dirs:
        return
    # -s/-p: the code objects name the installed path, not the build root.
    env = dict(os.environ, PYTHONHASHSEED="0")
    _run(
        [args.python, "-I", "-m", "compileall", "-q", "-f", "-o", "0", "-o", "1",
         "--hardlink-dupes", "--invalidation-mode", "timestamp",
         "-s", str(buildroot), "-p", "/", *dirs],
        env,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pyproject_standin")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("buildrequires").set_defaults(func=cmd_buildrequires)

    p = sub.add_parser("wheel")
    p.add_argument("--wheeldir", required=True)
    p.add_argument("--builddir", required=True)
    p.set_defaults(func=cmd_wheel)

    p = sub.add_parser("install")
    for opt in ("buildroot", "prefix", "bindir", "wheeldir", "builddir", "sitelib",
                "sitearch", "record", "python", "shebang-opts"):
        p.add_argument(f"--{opt}", required=True)
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("save-files")
    for opt in ("buildroot", "sitelib", "sitearch", "python-version", "record",
                "output-files"):
        p.add_argument(f"--{opt}", required=True)
    p.add_argument("-l", dest="assert_license", action="store_true")
    p.add_argument("-L", dest="assert_license", action="store_false")
    p.add_argument("globs", nargs="+")
    p.set_defaults(func=cmd_save_files)

    p = sub.add_parser("shebang-fix")
    p.add_argument("--python", required=True)
    p.add_argument("--opts", default="")
    p.add_argument("files", nargs="*")
    p.set_defaults(func=cmd_shebang_fix)

    p = sub.add_parser("bytecompile")
    p.add_argument("--buildroot", required=True)
    p.add_argument("--python", required=True)
    p.add_argument("dirs", nargs="+")
    p.set_defaults(func=cmd_bytecompile)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
