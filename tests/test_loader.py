"""flux_imp.imp.loader: the launcher's importer for flux_imp's byte code.

Each case runs a fresh ``python3 -I -S`` on a byte-compiled copy of the
package, as the launcher starts it, and compares with the standard finder.
"""

from __future__ import annotations

import compileall
import json
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import flux_imp

PACKAGE = Path(flux_imp.__file__).resolve().parent

# Imports every module of the copy at sys.argv[1] (the loader first, as the
# launcher loads it, if sys.argv[2] == "loader"; "loader-first": also with
# the copy's directory first on sys.path), then prints what each module
# looks like.
PROBE = r"""
import json, sys
site, mode = sys.argv[1], sys.argv[2]
if mode == "loader-first":  # an entry before the standard library's, that exists
    sys.path.insert(0, site)
    mode = "loader"
else:
    sys.path.append(site)
seen = []
if mode == "loader":
    from _frozen_importlib_external import spec_from_file_location
    from _frozen_importlib import _load
    spec = spec_from_file_location("flux_imp.imp.loader", site + "/flux_imp/imp/loader.py")
    _load(spec).install(lambda path, st: seen.append([path, st.st_ino]), site)
names = [line for line in sys.stdin.read().split()]
for name in names:
    __import__(name)
out = {}
for name in names:
    m = sys.modules[name]
    out[name] = {"file": m.__file__, "cached": getattr(m, "__cached__", None),
                 "loader": type(m.__loader__).__name__ if not isinstance(m.__loader__, type)
                           else m.__loader__.__name__,
                 "path": list(getattr(m, "__path__", []) or []),
                 "names": sorted(k for k in vars(m) if not k.startswith("__"))}
print(json.dumps({"modules": out, "judged": seen}))
"""


def _modules() -> list[str]:
    # Not the admin tool and the CLIs: they import click, which may be absent here.
    return [m for m in flux_imp.PRIVILEGED_MODULES if not m.endswith("__main__")]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A byte-compiled copy of the package, as a package install leaves it."""
    shutil.copytree(PACKAGE, tmp_path / "flux_imp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert compileall.compile_dir(str(tmp_path / "flux_imp"), quiet=1)
    return tmp_path


def _probe(site: Path, mode: str, names: list[str]) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", PROBE, str(site), mode],
                            input="\n".join(names).encode(), capture_output=True, check=True)
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_the_package_ships_no_extension_modules() -> None:
    """The finder does not look for them (the standard one would, first)."""
    assert not [p for p in PACKAGE.rglob("*") if p.suffix in (".so", ".pyd")]


def test_modules_load_as_the_standard_finder_loads_them(site: Path) -> None:
    names = _modules()
    standard = _probe(site, "standard", names)["modules"]
    ours = _probe(site, "loader", names)["modules"]
    assert isinstance(standard, dict) and isinstance(ours, dict)
    for name in names:
        # The loader itself comes the standard way, from its path; then its
        # packages, flux_imp first (not searched for on sys.path), come its way.
        first = name == "flux_imp.imp.loader"
        assert ours[name]["loader"] == ("SourceFileLoader" if first else "Loader"), name
        assert standard[name]["loader"] == "SourceFileLoader"
        for key in ("file", "cached", "path", "names"):
            assert ours[name][key] == standard[name][key], (name, key)


def test_future_is_loaded_as_the_standard_finder_loads_it(site: Path) -> None:
    """``__future__``, which every module of ours imports, comes from the
    standard library's byte code through the loader, judged, where the
    interpreter says where that is (3.11 on); the loader itself imports
    nothing from a file (no ``from __future__``), so it is the first."""
    names = ["__future__", "flux_imp.imp.main"]
    standard = _probe(site, "standard", names)["modules"]["__future__"]
    found = _probe(site, "loader", names)
    ours = found["modules"]["__future__"]
    for key in ("file", "cached", "names"):
        assert ours[key] == standard[key], key
    if getattr(sys, "_stdlib_dir", None) is None:
        assert ours["loader"] == "SourceFileLoader"
        return
    assert ours["loader"] == "Loader"
    judged = dict(found["judged"])
    for path in (ours["file"], ours["cached"]):
        assert judged[path] == os.stat(path).st_ino, path


def test_future_is_left_to_the_standard_finder_behind_another_path_entry(site: Path) -> None:
    """A sys.path entry before the standard library's that exists could hold
    a ``__future__`` of its own: the path finder decides, as always."""
    found = _probe(site, "loader-first", ["__future__", "flux_imp.imp.main"])
    assert found["modules"]["__future__"]["loader"] == "SourceFileLoader"
    assert found["modules"]["flux_imp.imp.main"]["loader"] == "Loader"


def test_each_file_is_judged_before_it_is_read(site: Path) -> None:
    """With the status of the file itself (the loader's lstat, or the fstat
    of the byte code it opened), so the guard stats nothing again."""
    found = _probe(site, "loader", ["flux_imp.imp.main", "flux_imp.conf"])
    judged = dict(found["judged"])
    tag = sys.implementation.cache_tag
    imp, conf = site / "flux_imp" / "imp", site / "flux_imp" / "conf"
    for path in (imp / "main.py", imp / f"__pycache__/main.{tag}.pyc", conf / "__init__.py",
                 conf / f"__pycache__/__init__.{tag}.pyc"):  # fmt: skip
        assert judged[str(path)] == path.stat().st_ino, path


def test_symlinked_files_are_left_to_the_standard_finder(site: Path) -> None:
    """Which judges them where they lead: the loader opens none."""
    tag = sys.implementation.cache_tag
    imp = site / "flux_imp" / "imp"
    pyc = imp / "__pycache__" / f"log.{tag}.pyc"
    pyc.rename(site / "log.pyc")
    pyc.symlink_to(site / "log.pyc")
    source = imp / "launch.py"
    source.rename(site / "launch.py")
    source.symlink_to(site / "launch.py")
    found = _probe(site, "loader", ["flux_imp.imp.log", "flux_imp.imp.launch"])
    modules = found["modules"]
    assert modules["flux_imp.imp.log"]["loader"] == "SourceFileLoader"
    assert modules["flux_imp.imp.launch"]["loader"] == "SourceFileLoader"
    assert str(pyc) not in dict(found["judged"])


def test_a_stale_or_missing_pyc_is_left_to_the_standard_finder(site: Path) -> None:
    """An edited source is what runs, never its old byte code."""
    main = site / "flux_imp" / "imp" / "main.py"
    main.write_text(main.read_text() + "\nEDITED = 1\n")
    os.utime(main, (1, 1))
    tag = sys.implementation.cache_tag
    (site / "flux_imp" / "imp" / "__pycache__" / f"log.{tag}.pyc").unlink()
    found = _probe(site, "loader", ["flux_imp.imp.main", "flux_imp.imp.log", "flux_imp.imp.launch"])
    modules = found["modules"]
    assert isinstance(modules, dict)
    assert modules["flux_imp.imp.main"]["loader"] == "SourceFileLoader"
    assert "EDITED" in modules["flux_imp.imp.main"]["names"]
    assert modules["flux_imp.imp.log"]["loader"] == "SourceFileLoader"
    assert modules["flux_imp.imp.launch"]["loader"] == "Loader"


def test_a_hash_based_pyc_is_left_to_the_standard_finder(site: Path) -> None:
    source = site / "flux_imp" / "imp" / "log.py"
    compileall.compile_file(str(source), quiet=1, force=True,
                            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    found = _probe(site, "loader", ["flux_imp.imp.log"])
    modules = found["modules"]
    assert isinstance(modules, dict)
    assert modules["flux_imp.imp.log"]["loader"] == "SourceFileLoader"
