"""``flux-imp casign`` (upstream t1001-imp-casign.t, INTEROP.md 2.3) end to
end through the setuid test build, as a real user and under sudo
simulation; the signed certs are checked with the signing library in CA
mode.  The CA's secret key is root's (0600), so only the privileged parent
can have signed.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flux_imp.imp import audit
from flux_imp.imp.casign_rules import MAX_INPUT
from flux_imp.sign import b64, unwrap, wrap_as
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert

from . import impenv, users
from .impenv import ImpInstall
from .signconf import ca_table, make_context
from .syslogtrap import AUTHPRIV_NOTICE, AUTHPRIV_WARNING, SyslogTrap

MAX_CERT_TTL, MAX_SIGN_TTL = 60, 30


@dataclass(frozen=True)
class CasignSetup:
    imp: ImpInstall
    owner: pwd.struct_passwd
    top: Path
    ca: dict[str, Any]  # the [ca] table
    user: Cert  # the caller's cert, with its secret key

    def write_config(self, ca: dict[str, Any] | None) -> str:
        tables = impenv.toml_table("ca", ca) if ca is not None else ""
        return impenv.write_config(self.top / "conf.d", "allow-sudo = true\n" + tables)

    def env(self, pattern: str, sudo: bool) -> dict[str, str]:
        env = {"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern}
        if sudo:
            env["SUDO_USER"] = self.owner.pw_name
        return env

    def run(self, *, sudo: bool = False, ca: dict[str, Any] | None = None,
            stdin: bytes | None = None, binary: Path | None = None,
            ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        """casign with ``ca`` (default: ours) in the config, our cert (default) on stdin."""
        return impenv.run(
            binary or self.imp.test_build, ["casign", "ignored"],  # extra args are ignored
            as_user=None if sudo else users.become(self.owner),
            env=self.env(self.write_config(ca or self.ca), sudo),
            stdin=self.user.dumps().encode() if stdin is None else stdin)  # fmt: skip


@pytest.fixture
def setup(imp: ImpInstall, owner: pwd.struct_passwd, world_tmp: Path) -> CasignSetup:
    table = ca_table(world_tmp, **{"max-cert-ttl": MAX_CERT_TTL, "max-sign-ttl": MAX_SIGN_TTL})
    authority = CA(table)
    authority.keygen()
    authority.store()  # "ca" is 0600 root: the caller cannot read the secret key
    return CasignSetup(imp, owner, world_tmp, table, Cert.create())


def signed_cert(result: subprocess.CompletedProcess[bytes]) -> Cert:
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    return Cert.loads(result.stdout)


def fatal(result: subprocess.CompletedProcess[bytes], message: str) -> None:
    assert (result.returncode, result.stderr.decode()) == (1, f"flux-imp: Fatal: {message}\n")
    assert result.stdout == b""


# -- signing -------------------------------------------------------------------


@pytest.mark.parametrize("sudo", [False, True], ids=["setuid", "sudo"])
def test_signs_the_callers_cert(setup: CasignSetup, sudo: bool) -> None:
    assert os.stat(setup.ca["cert-path"]).st_mode & 0o777 == 0o600
    before = int(time.time())
    cert = signed_cert(setup.run(sudo=sudo))
    authority = CA(setup.ca)
    authority.load()
    assert authority.verify(cert) == (setup.owner.pw_uid, MAX_SIGN_TTL)  # userid, max-sign-ttl
    assert cert.public_key == setup.user.public_key
    meta = cert.meta
    uuid.UUID(str(meta.get_str("uuid")))
    ctime, xtime = meta.get_time("ctime"), meta.get_time("xtime")
    assert ctime is not None and before <= ctime <= time.time()
    assert xtime == ctime + MAX_CERT_TTL
    assert meta.get_int("max-sign-ttl") == MAX_SIGN_TTL
    assert authority.cert is not None
    assert meta.get_str("issuer") == authority.cert.meta.get_str("uuid")
    assert meta.get_str("domain") == "FLUX.TEST"
    assert meta.get_bool("ca-capability") is False


def test_signed_cert_verifies_a_token_in_ca_mode(setup: CasignSetup) -> None:
    cert = signed_cert(setup.run())
    cert.secret_key = setup.user.secret_key
    cert.store(str(setup.top / "u"))
    ctx = make_context(setup.top, (
        '[sign]\nmax-ttl = 30\ndefault-type = "curve"\nallowed-types = ["curve"]\n'
        f'[sign.curve]\nrequire-ca = true\ncert-path = "{setup.top}/u"\n'
        + impenv.toml_table("ca", setup.ca)))
    token = wrap_as(ctx, setup.owner.pw_uid, b"payload")
    got = unwrap(ctx, token)
    assert (got.userid, got.payload) == (setup.owner.pw_uid, b"payload")


# -- refusals ------------------------------------------------------------------


@pytest.mark.parametrize("stdin", [b"", b"garbage\n", b"[metadata]\n"],
                         ids=["empty", "garbage", "no-key"])  # fmt: skip
def test_bad_stdin(setup: CasignSetup, stdin: bytes) -> None:
    fatal(setup.run(stdin=stdin), "casign: decode cert: Invalid argument")


def test_dev_zero_stdin(setup: CasignSetup) -> None:
    # Upstream reads 10 MiB, then says "Invalid argument"; we stop at 1 MiB.
    env = setup.env(setup.write_config(setup.ca), False)
    with open("/dev/zero", "rb") as zero:
        result = subprocess.run([str(setup.imp.test_build), "casign"], stdin=zero, env=env,
                                preexec_fn=users.become(setup.owner), capture_output=True,
                                cwd="/", timeout=60, check=False)  # fmt: skip
    fatal(result, f"casign: decode cert: input too large (more than {MAX_INPUT} bytes)")


def test_no_ca_configuration(setup: CasignSetup) -> None:
    pattern = setup.write_config(None)
    result = impenv.run(setup.imp.test_build, ["casign"], as_user=users.become(setup.owner),
                        env=setup.env(pattern, False), stdin=setup.user.dumps().encode())
    fatal(result, "casign: no [ca] configuration")


def test_ca_create_error(setup: CasignSetup) -> None:
    table = {k: v for k, v in setup.ca.items() if k != "domain"}
    fatal(setup.run(ca=table), "casign: ca_create: 'domain' must be set")


def test_ca_load_error(setup: CasignSetup) -> None:
    missing = str(setup.top / "missing")
    fatal(setup.run(ca={**setup.ca, "cert-path": missing}),
          f"casign: ca_load: {missing}: No such file or directory")


def test_ca_sign_error(setup: CasignSetup) -> None:
    fatal(setup.run(ca={**setup.ca, "max-cert-ttl": -1}), "casign: ca_sign: ttl must be <= -1")


# -- not setuid ------------------------------------------------------------------

NOT_SETUID = "flux-imp: Warning: casign: imp is not installed setuid, proceeding anyway...\n"


def test_not_setuid_cannot_read_the_ca_key(setup: CasignSetup) -> None:
    result = setup.run(binary=setup.imp.unprivileged)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"{NOT_SETUID}flux-imp: Fatal: casign: ca_load: {setup.ca['cert-path']}: "
        "Permission denied\n")  # fmt: skip


def test_not_setuid_signs_with_a_readable_ca(setup: CasignSetup) -> None:
    os.chown(setup.ca["cert-path"], setup.owner.pw_uid, -1)
    result = setup.run(binary=setup.imp.unprivileged)
    assert (result.returncode, result.stderr.decode()) == (0, NOT_SETUID)
    assert Cert.loads(result.stdout).meta.get_int("userid") == setup.owner.pw_uid


# -- audit records ----------------------------------------------------------------


def run_logged(setup: CasignSetup, log: SyslogTrap, stdin: bytes
               ) -> tuple[subprocess.CompletedProcess[bytes], list[tuple[int, str]]]:  # fmt: skip
    """casign as the owner; its result and audit records."""
    env = setup.env(setup.write_config(setup.ca), False)
    result = impenv.run(setup.imp.test_build, ["casign"], env=env, stdin=stdin,
                        as_user=log.preexec(users.become(setup.owner)))
    return result, log.records()


def test_audit_signature(setup: CasignSetup, syslog: SyslogTrap) -> None:
    result, records = run_logged(setup, syslog, setup.user.dumps().encode())
    cert = signed_cert(result)
    fields: dict[str, audit.Value] = {
        "half": "privileged", "caller_uid": setup.owner.pw_uid,
        "public_key": b64.encode(setup.user.public_key),
        "uuid": cert.meta.get_str("uuid"), "xtime": cert.meta.get_time("xtime")}  # fmt: skip
    assert records == [(AUTHPRIV_NOTICE, audit.format_record("casign", "allowed", fields))]


def test_audit_refusal(setup: CasignSetup, syslog: SyslogTrap) -> None:
    result, records = run_logged(setup, syslog, b"garbage")
    fatal(result, "casign: decode cert: Invalid argument")
    fields: dict[str, audit.Value] = {"half": "unprivileged", "caller_uid": setup.owner.pw_uid}
    reason = "refused: casign: decode cert: Invalid argument"
    assert records == [(AUTHPRIV_WARNING, audit.format_record("casign", reason, fields))]
