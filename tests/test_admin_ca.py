"""flux-security ca: a CA it creates signs through the real setuid casign;
the signed cert's token verifies in CA mode until ``ca revoke``."""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flux_imp.sign import SignError, unwrap, wrap_as
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert

from . import impenv, users
from .impenv import ImpInstall
from .signconf import ca_table, make_context

FLUX_SECURITY = [sys.executable, "-m", "flux_imp.admin"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLUX_SECURITY, *args], capture_output=True, text=True, check=False)


def test_create_writes_the_pair_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = str(tmp_path / "ca")
    got = run("ca", "create", "--cert", path, "--domain", "FLUX.TEST", "--max-cert-ttl", "60",
              "--max-sign-ttl", "30", "--ttl", "50", "--json")
    assert got.returncode == 0, got.stderr
    info = json.loads(got.stdout)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path + ".pub").st_mode) == 0o644
    cert = Cert.load(path, secret=True)
    meta = cert.meta
    assert meta.get_str("issuer") == meta.get_str("uuid") == info["uuid"]
    assert (meta.get_str("domain"), meta.get_int("max-sign-ttl")) == ("FLUX.TEST", 30)
    assert meta.get_bool("ca-capability") is True
    assert info["xtime"] - info["not-valid-before-time"] == 50
    again = run("ca", "create", "--cert", path)
    assert (again.returncode, again.stderr) == (
        1, f"flux-security: {path}: already exists (--force replaces the pair)\n")
    assert Cert.load(path).meta.get_str("uuid") == info["uuid"]  # untouched
    assert run("ca", "create", "--cert", path, "--force").returncode == 0
    assert Cert.load(path).meta.get_str("uuid") != info["uuid"]


def test_create_ttl_above_max_is_the_libraries_refusal(tmp_path: Path) -> None:
    got = run("ca", "create", "--cert", str(tmp_path / "ca"), "--max-cert-ttl", "60",
              "--ttl", "61")
    assert (got.returncode, got.stderr) == (1, "flux-security: ca create: ttl must be <= 60\n")
    assert not (tmp_path / "ca.pub").exists()


def test_revoke_needs_a_revoke_dir(tmp_path: Path) -> None:
    path = str(tmp_path / "ca")
    assert run("ca", "create", "--cert", path).returncode == 0
    got = run("ca", "revoke", path, "--sysconfdir", str(tmp_path))
    assert got.returncode == 1
    assert got.stderr.startswith("flux-security: ca revoke: ")


def test_created_ca_signs_through_casign_and_revoke_refuses(
        imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path) -> None:
    table = ca_table(world_tmp)
    assert run("ca", "create", "--cert", table["cert-path"], "--domain", table["domain"],
               "--max-cert-ttl", str(table["max-cert-ttl"]),
               "--max-sign-ttl", str(table["max-sign-ttl"])).returncode == 0
    user = Cert.create()
    pattern = impenv.write_config(world_tmp / "conf.d", impenv.toml_table("ca", table))
    signed = impenv.run(imp.test_build, ["casign"], as_user=users.become(owner),
                        env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern},
                        stdin=user.dumps().encode())
    assert (signed.returncode, signed.stderr) == (0, b""), signed.stderr
    cert = Cert.loads(signed.stdout)
    authority = CA(table)
    authority.load()
    assert authority.cert is not None
    assert cert.meta.get_str("issuer") == authority.cert.meta.get_str("uuid")
    cert.secret_key = user.secret_key
    cert.store(str(world_tmp / "u"))
    sign_toml = (
        '[sign]\nmax-ttl = 30\ndefault-type = "curve"\nallowed-types = ["curve"]\n'
        f'[sign.curve]\nrequire-ca = true\ncert-path = "{world_tmp}/u"\n'
        + impenv.toml_table("ca", table))
    ctx = make_context(world_tmp, sign_toml)
    token = wrap_as(ctx, owner.pw_uid, b"payload")
    assert unwrap(ctx, token).payload == b"payload"

    got = run("ca", "revoke", str(world_tmp / "u.pub"), "--revoke-dir", table["revoke-dir"],
              "--json")
    assert got.returncode == 0, got.stderr
    uuid = cert.meta.get_str("uuid")
    assert json.loads(got.stdout) == {"uuid": uuid, "revoked": f"{table['revoke-dir']}/{uuid}"}
    ctx = make_context(world_tmp, sign_toml)  # a fresh context: no cached verdict
    with pytest.raises(SignError, match="revoked"):
        unwrap(ctx, token)
