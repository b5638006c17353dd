"""flux-sign end to end, as a separate process, with all three mechanisms."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import flux_imp
from flux_imp.sign.cert import Cert

from . import users

FLUX_SIGN = [sys.executable, "-m", "flux_imp.sign"]
CONFIG = """\
[sign]
max-ttl = 60
default-type = "none"
allowed-types = [ "none", "curve", "munge" ]
[sign.curve]
require-ca = false
cert-path = "{cert}"
[sign.munge]
socket-path = "{socket}"
"""


def run(args: list[str], stdin: bytes = b"", env: dict[str, str] | None = None,
        as_user: Callable[[], None] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(FLUX_SIGN + args, input=stdin, capture_output=True,
                          env=env, check=False, preexec_fn=as_user)


@pytest.fixture
def conf(tmp_path: Path, munged: str) -> str:
    """A config pattern enabling all three mechanisms."""
    (tmp_path / "sign.toml").write_text(CONFIG.format(cert=tmp_path / "sig", socket=munged))
    return str(tmp_path / "*.toml")


@pytest.mark.parametrize("mech", ["none", "munge"])
def test_sign_then_verify_round_trip(conf: str, mech: str) -> None:
    signed = run(["sign", "--config", conf, "--mech", mech], b"jobspec")
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.endswith(b"\n")
    verified = run(["verify", "--config", conf], signed.stdout)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout) == {
        "userid": os.getuid(), "mechanism": mech,
        "payload": base64.b64encode(b"jobspec").decode(),
    }


def test_curve_home_mode_round_trip_as_a_real_user(
    world_tmp: Path, munged: str, guest: pwd.struct_passwd
) -> None:
    # The guest signs with the default cert ~/.flux/curve/sig; root verifies
    # it against the guest's home cert, as the IMP would.
    tmp_path = world_tmp
    (tmp_path / "sign.toml").write_text(
        CONFIG.replace('cert-path = "{cert}"\n', "").format(socket=munged))
    conf = str(tmp_path / "*.toml")
    home = Path(guest.pw_dir)
    as_guest = users.become(guest)
    for sub in (home / ".flux", home / ".flux" / "curve"):
        sub.mkdir(exist_ok=True)
        os.chown(sub, guest.pw_uid, guest.pw_gid)
    for name in ("sig", "sig.pub"):  # another test's pair: keygen would refuse it
        (home / ".flux" / "curve" / name).unlink(missing_ok=True)
    assert run(["keygen", str(home / ".flux/curve/sig")], as_user=as_guest).returncode == 0
    signed = run(["sign", "--config", conf, "--mech", "curve"], b"p", as_user=as_guest)
    assert signed.returncode == 0, signed.stderr
    verified = run(["verify", "--config", conf], signed.stdout)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout) == {"userid": guest.pw_uid, "mechanism": "curve",
                                           "payload": base64.b64encode(b"p").decode()}
    os.unlink(home / ".flux/curve/sig.pub")
    failed = run(["verify", "--config", conf], signed.stdout)
    assert failed.stderr.decode() == (
        f"sign-curve-verify: error loading cert from {home}/.flux/curve/sig\n")


def test_verify_error_is_one_line_on_stderr(conf: str) -> None:
    token = base64.b64encode(b"version\0i1\0mechanism\0sfoo\0").decode() + "..x"
    result = run(["verify", "--config", conf], token.encode())
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr == b"sign-unwrap: header mechanism=foo unknown\n"


def test_any_mech_skips_allowed_types(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        '[sign]\nmax-ttl = 5\ndefault-type = "none"\nallowed-types = ["munge"]\n')
    conf = str(tmp_path / "*.toml")
    token = run(["sign", "--config", conf, "--mech", "none"]).stdout
    assert run(["verify", "--config", conf], token).stderr == (
        b"sign-unwrap: header mechanism=none not allowed\n")
    assert run(["verify", "--config", conf, "--any-mech"], token).returncode == 0


def test_sign_userid_option(conf: str) -> None:
    token = run(["sign", "--config", conf, "--userid", "4242"], b"x").stdout
    result = run(["verify", "--config", conf, "--no-verify"], token)
    assert json.loads(result.stdout)["userid"] == 4242


def test_environment_pattern_is_the_default(conf: str) -> None:
    env = dict(os.environ, FLUX_SECURITY_CONFIG_PATTERN=conf)
    assert run(["sign"], b"x", env).returncode == 0
    env["FLUX_SECURITY_CONFIG_PATTERN"] = "/nonexistent/*.toml"
    result = run(["sign"], b"x", env)
    assert result.returncode == 1
    assert result.stderr == b"/nonexistent/*.toml::-1: Read error\n"


def test_keygen_writes_pair_with_upstream_modes(tmp_path: Path) -> None:
    result = run(["keygen", str(tmp_path / "c"), "--meta", "site=lab",
                  "--meta", "n=3", "--meta", "ok=true"])
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.pub").stat().st_mode) == 0o644
    cert = Cert.load(str(tmp_path / "c"), secret=True)
    assert cert.has_secret
    assert cert.meta_get("site", "s") == "lab"
    assert cert.meta_get("n", "i") == 3
    assert cert.meta_get("ok", "b") is True
    assert (tmp_path / "c.pub").read_text().startswith(
        '[metadata]\n    algorithm = "ed25519"\n    site = "lab"\n')


@pytest.mark.parametrize("existing", ["c", "c.pub"])
def test_keygen_refuses_an_existing_pair_without_force(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("old")
    (tmp_path / existing).chmod(0o644)
    result = run(["keygen", str(tmp_path / "c")])
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == (
        f"keygen: {tmp_path}/{existing}: already exists (--force replaces the pair)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]  # nothing written
    assert (tmp_path / existing).read_text() == "old"


def test_keygen_force_replaces_the_pair_with_exact_modes(tmp_path: Path) -> None:
    for name in ("c", "c.pub"):
        (tmp_path / name).write_text("old")
        (tmp_path / name).chmod(0o644 if name == "c" else 0o600)
    inode = (tmp_path / "c").stat().st_ino
    def tight_umask() -> None:
        os.umask(0o077)

    result = run(["keygen", "--force", str(tmp_path / "c")], as_user=tight_umask)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.pub").stat().st_mode) == 0o644
    assert (tmp_path / "c").stat().st_ino != inode  # a new file renamed into place
    assert Cert.load(str(tmp_path / "c"), secret=True).has_secret
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "c.pub"]  # no temp files left


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
@pytest.mark.parametrize("link", ["c", "c.pub"])
def test_keygen_refuses_a_symlink(tmp_path: Path, link: str, force: list[str]) -> None:
    target = tmp_path / "target"
    target.write_text("precious")
    target.chmod(0o644)
    (tmp_path / link).symlink_to(target)
    result = run(["keygen", *force, str(tmp_path / "c")])
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == (
        f"keygen: {tmp_path}/{link}: is a symbolic link, not written through\n")
    assert target.read_text() == "precious"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([link, "target"])


def test_keygen_dangling_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "c").symlink_to(tmp_path / "created-through-the-link")
    assert run(["keygen", str(tmp_path / "c")]).returncode == 1
    assert not (tmp_path / "created-through-the-link").exists()


def test_keygen_bad_meta(tmp_path: Path) -> None:
    result = run(["keygen", str(tmp_path / "c"), "--meta", "novalue"])
    assert result.returncode == 1
    assert b"expected KEY=VALUE" in result.stderr


# -- version and exit status (man/flux-sign.1, EXIT STATUS) ---------------------------


def test_version_prints_the_package_version() -> None:
    result = run(["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"flux-sign {flux_imp.__version__}\n".encode()
    # flux_imp.__version__ is what `flux-imp version` prints; the installed
    # metadata (pyproject.toml's version) must say the same.
    assert importlib.metadata.version("flux-imp") == flux_imp.__version__


@pytest.mark.parametrize("args", [["--help"], ["sign", "--help"], ["keygen", "--help"]])
def test_help_exits_0(args: list[str]) -> None:
    result = run(args)
    assert result.returncode == 0
    assert result.stdout.startswith(b"Usage: ")


# Click words its messages differently across versions: match the stable part.
@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], "Missing command"),
        (["frob"], "frob"),
        (["--frob"], "--frob"),
        (["sign", "--mech", "foo"], "--mech"),
        (["sign", "--userid", "x"], "--userid"),
        (["keygen"], "PATH"),
    ],
)
def test_usage_error_exits_2(args: list[str], error: str) -> None:
    result = run(args)
    assert result.returncode == 2
    assert result.stdout == b""
    text = result.stderr.decode()
    assert text.startswith("Usage: ")
    last = text.splitlines()[-1]
    assert last.startswith("Error: ")
    assert error in last


def test_sign_failure_exits_1(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        '[sign]\nmax-ttl = 0\ndefault-type = "none"\nallowed-types = ["none"]\n')
    result = run(["sign", "--config", str(tmp_path / "*.toml")], b"x")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr == b"sign: max-ttl should be greater than zero\n"


def test_config_load_failure_exits_1(tmp_path: Path) -> None:
    result = run(["verify", "--config", str(tmp_path / "*.toml")], b"x")
    assert result.returncode == 1
    assert result.stderr == f"pattern {tmp_path}/*.toml matched nothing\n".encode()


def test_keygen_failure_exits_1(tmp_path: Path) -> None:
    result = run(["keygen", str(tmp_path / "missing" / "c")])
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr == b"keygen: No such file or directory\n"
