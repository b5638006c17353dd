"""flux-security config: the IMP's merged config, provenance, the IMP's lint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flux_imp.imp import impconfig

FLUX_SECURITY = [sys.executable, "-m", "flux_imp.admin"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLUX_SECURITY, *args], capture_output=True, text=True, check=False)


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    for sub in ("imp", "security"):
        (tmp_path / "flux" / sub / "conf.d").mkdir(parents=True)
    return tmp_path


def imp_file(etc: Path, name: str, text: str) -> str:
    path = etc / "flux" / "imp" / "conf.d" / name
    path.write_text(text)
    return str(path)


def test_merge_provenance_and_unknown_keys(etc: Path) -> None:
    a = imp_file(etc, "a.toml", '[exec]\nallowed-users = ["flux"]\nbogus = 1\n'
                 '[run.prolog]\npath = "/p"\n')
    b = imp_file(etc, "b.toml", 'allow-sudo = 1\n[exec]\nallowed-users = ["x"]\nwat = 2\n')
    got = run("config", "--sysconfdir", str(etc), "--json")
    assert got.returncode == 0, got.stderr
    view = json.loads(got.stdout)
    assert view["files"] == [a, b]
    # Shallow merge: b's [exec] replaces a's whole table (its "bogus" too).
    assert view["config"] == {"exec": {"allowed-users": ["x"], "wat": 2},
                              "run": {"prolog": {"path": "/p"}}, "allow-sudo": 1}
    assert view["sources"] == {"exec": b, "run": a, "allow-sudo": b}
    assert view["replaced"] == {"exec": [a]}
    # The IMP's own warnings, in its order.
    assert [f["message"] for f in view["findings"]] == [
        text for _, text in impconfig.lint(view["config"])
    ] == [
        "config: unknown key 'exec.wat' ignored",
        "config: 'allow-sudo' should be of type bool, read as false/empty",
    ]
    text = run("config", "--sysconfdir", str(etc))
    assert text.returncode == 0
    assert f'exec.allowed-users = ["x"]  # {b}\n' in text.stdout
    assert "WARN exec.wat: config: unknown key 'exec.wat' ignored\n" in text.stdout


def test_no_file_and_a_bad_file_fail_with_the_imps_message(etc: Path) -> None:
    got = run("config", "--sysconfdir", str(etc))
    assert (got.returncode, got.stdout) == (1, "")
    assert got.stderr == f"flux-security: {etc}/flux/imp/conf.d/*.toml: No config file(s) found\n"
    bad = imp_file(etc, "a.toml", "[exec\n")
    got = run("config", "--sysconfdir", str(etc))
    assert got.returncode == 1
    assert got.stderr == f"flux-security: loading config: {bad}: -1: Unbalanced brackets\n"


def test_sign_view_uses_the_library_check(etc: Path) -> None:
    conf = etc / "flux" / "security" / "conf.d" / "sign.toml"
    conf.write_text('[sign]\nmax-ttl = 30\ndefault-type = "none"\nallowed-types = ["none"]\n')
    got = run("config", "--sign", "--sysconfdir", str(etc), "--json")
    assert got.returncode == 0, got.stderr
    view = json.loads(got.stdout)
    assert (view["kind"], view["sources"], view["findings"]) == ("sign", {"sign": str(conf)}, [])
    conf.write_text('[sign]\nmax-ttl = 30\ndefault-type = "none"\n')
    view = json.loads(run("config", "--sign", "--sysconfdir", str(etc), "--json").stdout)
    assert [f["key"] for f in view["findings"]] == ["sign"]
    assert "allowed-types" in view["findings"][0]["message"]
