"""Issue 9 hardening of the signing paths, end to end through the setuid
test build as real users (the owner runs the IMP, the guest signs J):

* revocation: a revoke-dir the owner cannot search still revokes (the
  privileged half checks with its effective ids);
* the guest's home cert (curve without require-ca) is opened without
  following a symlink, never blocks on a FIFO, and is read by the
  privileged half with the guest's identity;
* bounded work for bad input: casign and exec refuse oversized stdin,
  and a cert with many metadata entries is signed promptly.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flux_imp.imp.casign_rules import MAX_INPUT as CASIGN_MAX_INPUT
from flux_imp.imp.unprivileged import jsonin
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert

from . import impenv, users
from .impenv import ImpInstall
from .jobs import sign_as
from .signconf import ca_table
from .syslogtrap import SyslogTrap

SH = "/bin/sh"
PROMPT = 20.0  # seconds: far above the IMP's run time, far below a hang


def fatal(message: str) -> bytes:
    return f"flux-imp: Fatal: {message}\n".encode()


def real_uid(pid: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


@contextlib.contextmanager
def reaping(user: pwd.struct_passwd) -> Iterator[None]:
    """If the IMP times out (a hang: the bug is back), SIGKILL what this
    session's ``user`` still runs, so that no half is left spinning."""
    try:
        yield
    except subprocess.TimeoutExpired:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if real_uid(pid) == user.pw_uid:
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
        raise


def audit_half(records: list[tuple[int, str]]) -> str:
    """The ``half`` of the one exec record."""
    [(_, text)] = records
    assert text.startswith("exec "), text
    return text.split(" half=", 1)[1].split(" ", 1)[0].strip('"')


@dataclass
class Setup:
    imp: ImpInstall
    owner: pwd.struct_passwd
    guest: pwd.struct_passwd
    tmp: Path

    def config(self, curve: str, extra: str = "") -> str:
        text = (f'[exec]\nallowed-users = ["{self.owner.pw_name}"]\n'
                f'allowed-shells = ["{SH}"]\n'
                '[sign]\nmax-ttl = 60\ndefault-type = "curve"\nallowed-types = ["curve"]\n'
                f"[sign.curve]\n{curve}{extra}")  # fmt: skip
        return impenv.write_config(self.tmp / "conf.d", text)

    def exec(self, pattern: str, stdin: bytes, *, env: dict[str, str] | None = None,
             as_user: Callable[[], None] | None = None, timeout: float = PROMPT
             ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        """``flux-imp exec /bin/sh -c 'echo ran'`` as the owner."""
        with reaping(self.owner):
                return impenv.run(self.imp.test_build, ["exec", SH, "-c", "echo ran"],
                              as_user=as_user or users.become(self.owner), stdin=stdin,
                              env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern,
                                   **(env or {})}, timeout=timeout)  # fmt: skip


@pytest.fixture
def setup(imp: ImpInstall, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
          world_tmp: Path) -> Setup:  # fmt: skip
    return Setup(imp, owner, guest, world_tmp)


def request(token: str, **extra: Any) -> bytes:
    return json.dumps({"J": token, **extra}).encode()


def chown(path: Path, user: pwd.struct_passwd) -> None:
    os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


# -- item 2: revocation fails closed ---------------------------------------------

REVOKED = "exec: signature validation failed: sign-curve-verify: ca: cert has been revoked"


@dataclass
class CaSetup:
    setup: Setup
    pattern: str
    cert: Cert  # the guest's, signed by the CA
    revoke_dir: Path  # 0700 root: the owner cannot search it

    def revoke(self) -> None:
        (self.revoke_dir / str(self.cert.meta.get_str("uuid"))).touch()


@pytest.fixture
def ca_setup(setup: Setup) -> CaSetup:
    table = ca_table(setup.tmp)
    authority = CA(table)
    authority.keygen()
    authority.store()
    revoke_dir = Path(table["revoke-dir"])
    revoke_dir.mkdir(mode=0o700)
    guest_dir = setup.tmp / "guest"
    guest_dir.mkdir()
    chown(guest_dir, setup.guest)
    cert = Cert.create()
    authority.sign(cert, 0, setup.guest.pw_uid)
    cert.store(str(guest_dir / "sig"))
    for name in ("sig", "sig.pub"):
        chown(guest_dir / name, setup.guest)
    pattern = setup.config(f'require-ca = true\ncert-path = "{guest_dir}/sig"\n',
                           impenv.toml_table("ca", table))
    return CaSetup(setup, pattern, cert, revoke_dir)


def test_ca_mode_runs_an_unrevoked_cert(ca_setup: CaSetup) -> None:
    setup = ca_setup.setup
    result = setup.exec(ca_setup.pattern, request(sign_as(setup.guest, ca_setup.pattern)))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ran\n", b"")


def test_privileged_half_sees_revocations_the_owner_cannot(
    ca_setup: CaSetup, syslog: SyslogTrap
) -> None:
    """The revoke-dir is 0700 root: the unprivileged half (the owner) cannot
    look and lets J through, as upstream; the privileged half must see the
    revocation (it checked with the real uid, the owner's: J ran)."""
    setup = ca_setup.setup
    token = sign_as(setup.guest, ca_setup.pattern)
    ca_setup.revoke()
    result = setup.exec(ca_setup.pattern, request(token),
                        as_user=syslog.preexec(users.become(setup.owner)))
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", fatal(REVOKED))
    assert audit_half(syslog.records()) == "privileged"


# -- item 6: the guest's home cert -------------------------------------------------

HOME_MODE = "require-ca = false\n"


@dataclass
class HomeSetup:
    setup: Setup
    pattern: str
    curve: Path  # ~guest/.flux/curve
    token: str  # J signed by the guest with its home cert

    @property
    def pub(self) -> Path:
        return self.curve / "sig.pub"

    @property
    def message(self) -> str:
        return ("exec: signature validation failed: sign-curve-verify: "
                f"error loading cert from {self.curve}/sig")  # fmt: skip


@pytest.fixture
def home(setup: Setup) -> Iterator[HomeSetup]:
    """The guest's cert in ~/.flux/curve (removed after), and J it signed."""
    guest_home = Path(setup.guest.pw_dir)
    curve = guest_home / ".flux" / "curve"
    shutil.rmtree(guest_home / ".flux", ignore_errors=True)
    curve.mkdir(parents=True)
    for directory in (curve.parent, curve):
        chown(directory, setup.guest)
    Cert.create().store(str(curve / "sig"))
    for name in ("sig", "sig.pub"):
        chown(curve / name, setup.guest)
    pattern = setup.config(HOME_MODE)
    try:
        yield HomeSetup(setup, pattern, curve, sign_as(setup.guest, pattern))
    finally:
        shutil.rmtree(guest_home / ".flux", ignore_errors=True)


def test_home_cert_regular_file_runs(home: HomeSetup) -> None:
    result = home.setup.exec(home.pattern, request(home.token))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ran\n", b"")


def unblock(fifo: Path) -> None:
    # If an IMP hangs opening the FIFO (the bug), release it so it exits.
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))


def test_home_cert_fifo_fails_promptly(home: HomeSetup) -> None:
    home.pub.unlink()
    os.mkfifo(home.pub, 0o644)
    chown(home.pub, home.setup.guest)
    try:
        result = home.setup.exec(home.pattern, request(home.token))  # TimeoutExpired: hung
    finally:
        unblock(home.pub)
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", fatal(home.message))


def test_home_cert_symlink_is_refused(home: HomeSetup) -> None:
    # Even to the guest's own, valid cert: the file itself or nothing.
    home.pub.rename(home.curve / "real.pub")
    home.pub.symlink_to("real.pub")
    chown(home.pub, home.setup.guest)
    result = home.setup.exec(home.pattern, request(home.token))
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", fatal(home.message))


@pytest.mark.parametrize(("mode", "owner_group", "refused_by"),
                         [(0o640, True, "privileged"), (0o600, False, "unprivileged")],
                         ids=["root-owner-group-0640", "root-0600"])  # fmt: skip
def test_home_cert_is_read_with_the_guests_identity(
    home: HomeSetup, syslog: SyslogTrap, mode: int, owner_group: bool, refused_by: str
) -> None:
    """A cert the guest cannot read is not the guest's.  Readable by the
    owner's group, it passes the unprivileged half (the owner's identity, as
    upstream) and only the privileged half, reading as the guest, refuses;
    0600 root, the unprivileged half already cannot read it."""
    owner = home.setup.owner
    os.chown(home.pub, 0, owner.pw_gid if owner_group else 0)
    home.pub.chmod(mode)
    result = home.setup.exec(home.pattern, request(home.token),
                             as_user=syslog.preexec(users.become(owner)))
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", fatal(home.message))
    assert audit_half(syslog.records()) == refused_by


# -- item 9: bounded input ----------------------------------------------------------


@pytest.fixture
def casign_pattern(setup: Setup) -> str:
    table = ca_table(setup.tmp)
    authority = CA(table)
    authority.keygen()
    authority.store()
    return impenv.write_config(setup.tmp / "casign.d", impenv.toml_table("ca", table))


def casign(setup: Setup, pattern: str, stdin: bytes, timeout: float = PROMPT
           ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    with reaping(setup.owner):
        return impenv.run(setup.imp.test_build, ["casign"], as_user=users.become(setup.owner),
                          env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern},
                          stdin=stdin, timeout=timeout)  # fmt: skip


def test_casign_refuses_oversized_stdin(setup: Setup, casign_pattern: str) -> None:
    text = Cert.create().dumps().encode()
    padded = text + b"#" * (CASIGN_MAX_INPUT - len(text)) + b"\n"  # a valid cert, one byte over
    assert len(padded) == CASIGN_MAX_INPUT + 1
    result = casign(setup, casign_pattern, padded)
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal(
        f"casign: decode cert: input too large (more than {CASIGN_MAX_INPUT} bytes)")
    assert casign(setup, casign_pattern, padded[: CASIGN_MAX_INPUT - 1] + b"\n").returncode == 0


def test_casign_signs_many_metadata_entries_promptly(setup: Setup, casign_pattern: str) -> None:
    # 80,000 entries (~0.7 MiB): seconds now; the quadratic kv took hours.
    count = 80_000
    lines = "".join(f"m{i:x} = {i % 10}\n" for i in range(count))
    text = Cert.create().dumps().replace("[metadata]\n", f"[metadata]\n{lines}", 1).encode()
    assert len(text) <= CASIGN_MAX_INPUT
    result = casign(setup, casign_pattern, text, timeout=60)
    assert (result.returncode, result.stderr) == (0, b"")
    signed = Cert.loads(result.stdout)
    assert signed.meta.get_int(f"m{count - 1:x}") == (count - 1) % 10
    assert signed.meta.get_int("userid") == setup.owner.pw_uid


def test_exec_refuses_oversized_stdin(home: HomeSetup) -> None:
    data = request(home.token)
    padded = data + b" " * (jsonin.MAX_INPUT + 1 - len(data))  # valid JSON, one byte over
    result = home.setup.exec(home.pattern, padded, timeout=60)
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal(f"exec: invalid json input: {jsonin.TOO_LARGE}")
    result = home.setup.exec(home.pattern, padded[:-1], timeout=60)  # parsing 8 MiB: seconds
    assert (result.returncode, result.stdout) == (0, b"ran\n")


def test_exec_stops_reading_endless_stdin(home: HomeSetup) -> None:
    setup = home.setup

    def bounded_owner() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # if it reads on: fail
        users.become(setup.owner)()

    with open("/dev/zero", "rb") as zero, reaping(setup.owner):
        result = subprocess.run(
            [str(setup.imp.test_build), "exec", SH, "-c", "echo ran"], stdin=zero,
            capture_output=True, cwd="/", timeout=PROMPT, check=False,
            env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": home.pattern},
            preexec_fn=bounded_owner)  # fmt: skip
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr == fatal(f"exec: invalid json input: {jsonin.TOO_LARGE}")


def test_exec_huge_integer_is_a_json_error(home: HomeSetup) -> None:
    # int() refuses over 4300 digits: this was an internal error (a traceback).
    data = request(home.token)[:-1] + b', "n": ' + b"1" * 5000 + b"}"
    result = home.setup.exec(home.pattern, data)
    assert (result.returncode, result.stderr) == (1, fatal("exec: invalid json input: "
                                                           "too big integer"))


def test_exec_with_many_arguments_is_prompt(home: HomeSetup) -> None:
    # 100,000 args make a privsep message of 100,000 kv entries, built by the
    # unprivileged half and decoded by the privileged one: quadratic, minutes.
    setup, args = home.setup, ["a"] * 100_000
    with reaping(setup.owner):
        result = impenv.run(setup.imp.test_build, ["exec", SH, "-c", 'echo "$#"', "x", *args],
                            as_user=users.become(setup.owner), stdin=request(home.token),
                            env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": home.pattern},
                            timeout=60)  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, b"100000\n", b"")
