"""The curve CA: config, keygen, signing metadata, verification, revocation."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from flux_imp.sign import ca as ca_mod
from flux_imp.sign.ca import CA, CAError
from flux_imp.sign.cert import Cert

from . import users
from .signconf import NOW, VECTORS, Clock, ca_table, fake_clock

CA_UUID = "11111111-2222-4333-8444-555555555555"
USER_UUID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return fake_clock(monkeypatch, ca_mod)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    authority = CA(ca_table(tmp_path))
    authority.keygen()
    return authority


def message(func: Any, *args: Any) -> str:
    with pytest.raises(CAError) as info:
        func(*args)
    return info.value.text


# -- configuration ------------------------------------------------------------
def test_config_must_be_a_table() -> None:
    assert message(CA, 42) == "invalid config object"


@pytest.mark.parametrize(
    "key", ["max-cert-ttl", "max-sign-ttl", "cert-path", "revoke-dir", "revoke-allow", "domain"]
)
def test_config_every_key_required(key: str, tmp_path: Path) -> None:
    assert message(CA, ca_table(tmp_path, **{key: None})) == f"'{key}' must be set"


def test_config_unknown_key(tmp_path: Path) -> None:
    assert message(CA, {**ca_table(tmp_path), "foo": 42}) == "key 'foo' is unknown"


def test_config_unknown_subtable(tmp_path: Path) -> None:
    assert message(CA, {**ca_table(tmp_path), "sub": {}}) == "key 'sub' is unknown"


def test_config_wrong_type(tmp_path: Path) -> None:
    cfg = ca_table(tmp_path, **{"max-cert-ttl": "60"})
    assert message(CA, cfg) == "'max-cert-ttl' must be of type int64"


# -- keygen, store, load ----------------------------------------------------------
@pytest.mark.usefixtures("clock")
def test_keygen_self_signed_metadata(ca: CA) -> None:
    cert = ca.cert
    assert cert is not None
    meta = cert.meta
    assert meta.keys() == [
        "algorithm", "uuid", "not-valid-before-time", "ctime", "xtime",
        "userid", "max-sign-ttl", "issuer", "domain", "ca-capability",
    ]  # fmt: skip
    assert meta.get_str("issuer") == meta.get_str("uuid")
    assert meta.get_time("not-valid-before-time") == meta.get_time("ctime") == NOW
    assert meta.get_time("xtime") == NOW + 60
    assert meta.get_int("userid") == os.getuid()
    assert meta.get_int("max-sign-ttl") == 30
    assert meta.get_str("domain") == "FLUX.TEST"
    assert meta.get_bool("ca-capability") is True
    assert ca.verify(cert) == (os.getuid(), 30)


def test_keygen_bad_arguments(ca: CA) -> None:
    assert message(ca.keygen, 0, -1) == "Invalid argument"
    assert message(ca.keygen, -1, 0) == "Invalid argument"


def test_store_and_load(ca: CA, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        ca.store()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.pub").stat().st_mode) == 0o644
    user = Cert.create()
    ca.sign(user, 0, 1000)
    public = CA(ca_table(tmp_path))
    public.load(secret=False)
    assert public.verify(user) == (1000, 30)
    assert message(public.sign, Cert.create(), 0, 1000) == "CA cert does not contain secret key"
    assert message(public.store) == "CA cert does not contain secret key"
    public.load(secret=True)
    public.sign(Cert.create(), 0, 1000)
    assert public.cert == ca.cert


def test_load_missing_cert(tmp_path: Path) -> None:
    path = tmp_path / "ca"
    assert message(CA(ca_table(tmp_path)).load) == f"{path}: No such file or directory"


def test_store_before_keygen(tmp_path: Path) -> None:
    assert message(CA(ca_table(tmp_path)).store) == "CA cert was not initialized"


def test_store_failure_names_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "ca"
    authority = CA(ca_table(tmp_path, **{"cert-path": str(path)}))
    authority.keygen()
    assert message(authority.store) == f"{path}: No such file or directory"


# -- signing ----------------------------------------------------------------------
def test_sign_sets_metadata_in_order(ca: CA, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(USER_UUID))
    cert = Cert.create()
    cert.meta_set("userid", 5)  # refreshed: moved after later keys
    cert.meta_set("mine", "kept")
    clock.now = NOW + 7
    ca.sign(cert, 0, 1234)
    assert cert.meta.keys() == [
        "algorithm", "mine", "uuid", "not-valid-before-time", "ctime", "xtime",
        "userid", "max-sign-ttl", "issuer", "domain", "ca-capability",
    ]  # fmt: skip
    meta = cert.meta
    assert ca.cert is not None
    assert meta.get_str("uuid") == USER_UUID
    assert meta.get_str("issuer") == ca.cert.meta.get_str("uuid")
    assert meta.get_time("ctime") == meta.get_time("not-valid-before-time") == NOW + 7
    assert meta.get_time("xtime") == NOW + 7 + 60  # xtime - ctime = max-cert-ttl
    assert meta.get_int("userid") == 1234
    assert meta.get_int("max-sign-ttl") == 30
    assert meta.get_bool("ca-capability") is False
    assert ca.cert.verify_cert(cert)


def test_sign_uses_fresh_uuid(ca: CA) -> None:
    cert = Cert.create()
    ca.sign(cert, 0, 1)
    first = cert.meta.get_str("uuid")
    ca.sign(cert, 0, 1)
    assert first != cert.meta.get_str("uuid")
    assert str(uuid.UUID(str(first))) == first


def test_sign_explicit_ttl_and_not_valid_before(ca: CA, clock: Clock) -> None:
    cert = Cert.create()
    ca.sign(cert, 10, 1, NOW - 100)
    assert cert.meta.get_time("not-valid-before-time") == NOW - 100
    assert cert.meta.get_time("ctime") == clock.now
    assert cert.meta.get_time("xtime") == NOW - 90


def test_sign_ttl_too_large(ca: CA) -> None:
    assert message(ca.sign, Cert.create(), 61, 1) == "ttl must be <= 60"


@pytest.mark.parametrize("args", [(-1, 1, 0), (1, -1, 0), (1, 1, -1)])
def test_sign_bad_arguments(ca: CA, args: tuple[int, int, int]) -> None:
    assert message(ca.sign, Cert.create(), *args) == "Invalid argument"


def test_sign_without_ca_cert(tmp_path: Path) -> None:
    authority = CA(ca_table(tmp_path))
    assert message(authority.sign, Cert.create(), 0, 1) == "CA cert has not been loaded/generated"
    assert message(authority.verify, Cert.create()) == "CA cert has not been loaded/generated"


def test_sign_with_ca_cert_without_uuid(ca: CA) -> None:
    ca.set_cert(Cert.create())
    assert message(ca.sign, Cert.create(), 0, 1) == "No such file or directory"


# -- verification, in upstream's order --------------------------------------------
def test_verify_needs_ca_capability_first(ca: CA) -> None:
    plain = Cert.create()
    plain.meta_set("uuid", "foo")
    ca.set_cert(plain)
    cert = Cert.create()
    ca.sign(cert, 0, 1)  # signing with an incapable CA cert works...
    assert message(ca.verify, cert) == "ca certificate lacks ca-capability"  # ...verify not
    assert message(ca.verify, Cert.create()) == "ca certificate lacks ca-capability"


def test_verify_unsigned_cert(ca: CA) -> None:
    assert message(ca.verify, Cert.create()) == "signature verification failed"


def test_verify_modified_cert(ca: CA) -> None:
    cert = Cert.create()
    ca.sign(cert, 0, 1)
    cert.meta_set("userid", 2)
    assert message(ca.verify, cert) == "signature verification failed"


def test_verify_other_ca(ca: CA, tmp_path: Path) -> None:
    other = CA(ca_table(tmp_path))
    other.keygen()
    cert = Cert.create()
    other.sign(cert, 0, 1)
    assert message(ca.verify, cert) == "signature verification failed"


@pytest.mark.parametrize(
    "missing",
    ["uuid", "not-valid-before-time", "ctime", "xtime", "userid", "max-sign-ttl"],
)
def test_verify_required_metadata(ca: CA, missing: str) -> None:
    cert = Cert.create()
    ca.sign(cert, 0, 1)
    cert.meta.delete(missing)
    assert ca.cert is not None
    ca.cert.sign_cert(cert)
    assert message(ca.verify, cert) == "required metadata is missing from cert"


def test_verify_metadata_of_wrong_type_is_missing(ca: CA) -> None:
    cert = Cert.create()
    ca.sign(cert, 0, 1)
    cert.meta_set("userid", "1")
    assert ca.cert is not None
    ca.cert.sign_cert(cert)
    assert message(ca.verify, cert) == "required metadata is missing from cert"


def test_verify_expired(ca: CA, clock: Clock) -> None:
    cert = Cert.create()
    ca.sign(cert, 1, 1, NOW - 5)
    assert message(ca.verify, cert) == "cert has expired"
    ca.sign(cert, 5, 1, NOW - 5)  # xtime == now is still valid
    assert ca.verify(cert) == (1, 30)
    clock.now += 1
    assert message(ca.verify, cert) == "cert has expired"


@pytest.mark.usefixtures("clock")
def test_verify_not_yet_valid(ca: CA) -> None:
    cert = Cert.create()
    ca.sign(cert, 1, 1, NOW + 5)
    assert message(ca.verify, cert) == "cert is not yet valid"


@pytest.mark.usefixtures("clock")
def test_expired_is_checked_before_not_yet_valid(ca: CA) -> None:
    cert = Cert.create()
    ca.sign(cert, 0, 1)
    cert.meta_set("xtime", NOW - 1, "t")
    cert.meta_set("not-valid-before-time", NOW + 1, "t")
    assert ca.cert is not None
    ca.cert.sign_cert(cert)
    assert message(ca.verify, cert) == "cert has expired"


def test_revoke_then_verify(ca: CA, tmp_path: Path) -> None:
    cert = Cert.create()
    ca.sign(cert, 0, 1)
    cert_uuid = str(cert.meta.get_str("uuid"))
    old = os.umask(0o022)
    try:
        ca.revoke(cert_uuid)
    finally:
        os.umask(old)
    revoked = tmp_path / "revoke.d" / cert_uuid
    assert revoked.is_file() and revoked.stat().st_size == 0
    assert stat.S_IMODE(revoked.stat().st_mode) == 0o644
    assert stat.S_IMODE(revoked.parent.stat().st_mode) == 0o755
    assert message(ca.verify, cert) == "cert has been revoked"
    ca.revoke(cert_uuid)  # again: no error


def revoked_cert(ca: CA) -> tuple[Cert, Path]:
    """A cert signed by ``ca``, and the revocation path of its uuid."""
    cert = Cert.create()
    ca.sign(cert, 0, 1)
    return cert, Path(ca._str("revoke-dir")) / str(cert.meta.get_str("uuid"))


def verify_outcome(ca: CA, cert: Cert) -> str:
    try:
        ca.verify(cert)
    except CAError as exc:
        return exc.text
    return "valid"


@pytest.fixture
def world_ca(world_tmp: Path) -> CA:
    """A CA whose files are in a directory every user can reach."""
    authority = CA(ca_table(world_tmp))
    authority.keygen()
    return authority


def test_revocation_uses_effective_ids(world_ca: CA, owner: pwd.struct_passwd) -> None:
    """As the IMP's privileged half (real uid the caller's, effective 0), a
    revoke-dir that the caller cannot search still revokes."""
    ca = world_ca
    cert, path = revoked_cert(ca)
    path.parent.mkdir(mode=0o700)
    path.touch()

    def as_privileged_half() -> None:
        os.setresuid(owner.pw_uid, 0, 0)

    outcome = users.output_as(as_privileged_half, lambda: verify_outcome(ca, cert).encode())
    assert outcome == b"cert has been revoked"


def test_revocation_fails_closed(world_ca: CA, owner: pwd.struct_passwd) -> None:
    """Anything but "no such entry" revokes (a dangling symlink, a revoke-dir
    that is a file), except that a verifier without privilege that may not
    look cannot know (as upstream: the IMP's privileged half decides)."""
    ca = world_ca
    cert, path = revoked_cert(ca)
    assert verify_outcome(ca, cert) == "valid"  # no revoke-dir at all: nothing revoked
    path.parent.mkdir(mode=0o700)
    assert verify_outcome(ca, cert) == "valid"
    path.touch()
    outcome = users.output_as(users.become(owner), lambda: verify_outcome(ca, cert).encode())
    assert outcome == b"valid"
    path.unlink()
    path.symlink_to("nowhere")
    assert verify_outcome(ca, cert) == "cert has been revoked"
    shutil.rmtree(path.parent)
    path.parent.write_text("")
    assert verify_outcome(ca, cert) == "cert has been revoked"


def test_revoke_not_allowed(tmp_path: Path) -> None:
    authority = CA(ca_table(tmp_path, **{"revoke-allow": False}))
    assert message(authority.revoke, "x") == "revocation not permitted on this node"


def test_revoke_empty_uuid(ca: CA) -> None:
    assert message(ca.revoke, "") == "Invalid argument"


def test_revoke_dir_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    authority = CA(ca_table(tmp_path, **{"revoke-dir": str(tmp_path / "file")}))
    expect = f"{tmp_path}/file/x: Not a directory"
    assert message(authority.revoke, "x") == expect


def test_revoke_dir_cannot_be_made(tmp_path: Path) -> None:
    authority = CA(ca_table(tmp_path, **{"revoke-dir": str(tmp_path / "a" / "b")}))
    assert message(authority.revoke, "x") == "No such file or directory"


def test_authenticate(ca: CA) -> None:
    cert = Cert.create()
    ca.sign(cert, 0, 42)
    now = int(time.time())
    ca.authenticate(cert, 42, now - 30, now)
    assert message(ca.authenticate, cert, 43, now, now) == "userid mismatch"
    assert message(ca.authenticate, cert, 42, now - 31, now) == "max-sign-ttl exceeded"


def test_vector_ca_verifies_vector_user_cert(tmp_path: Path) -> None:
    if not (VECTORS / "ca.pub").exists():
        pytest.skip(f"{VECTORS} not found")
    shutil.copy(VECTORS / "ca.pub", tmp_path / "ca.pub")
    authority = CA(ca_table(tmp_path))
    authority.load()
    user = Cert.loads((VECTORS / "u.pub").read_bytes())
    assert authority.verify(user) == (65534, 315360000)
