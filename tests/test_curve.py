"""The curve mechanism: C-verified vectors, known answer, every verify message."""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flux_imp.sign import NOVERIFY, Context, SignError, unwrap, unwrap_anymech, wrap, wrap_as
from flux_imp.sign import ca as ca_mod
from flux_imp.sign import curve as curve_mod
from flux_imp.sign import token as token_mod
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert
from flux_imp.sign.kv import KV

from . import signconf
from .signconf import NOW, VECTORS, Clock, fake_clock, make_context

UID = os.getuid()

# Known answer, cross-checked by hand with the C library's verifier: a cert
# from seed bytes 0..31, ctime NOW, max-ttl ten years, userid 65534.
KAT_SECRET = (
    '[curve]\n    secret-key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8DoQe/884Qvh1w3RjnS8CZ'
    'Z+TWMJulDV8d3IZkElUxuA=="\n'
)
KAT_PUBLIC = (
    '[metadata]\n    algorithm = "ed25519"\n\n'
    '[curve]\n    public-key = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="\n'
)
KAT_TOKEN = (
    "dmVyc2lvbgBpMQBtZWNoYW5pc20Ac2N1cnZlAHVzZXJpZABpNjU1MzQAY3VydmUuY2VydC5tZXRhLmFsZ29y"
    "aXRobQBzZWQyNTUxOQBjdXJ2ZS5jZXJ0LmN1cnZlLnB1YmxpYy1rZXkAc0E2RUh2L1BPRUw0ZGNOMFk1MHZB"
    "bVdmazFqQ2JwUTFmSGR5R1pCSlZNYmc9AGN1cnZlLmN0aW1lAHQyMDIzLTExLTE0VDIyOjEzOjIwWgBjdXJ2"
    "ZS54dGltZQB0MjAzMy0xMS0xMVQyMjoxMzoyMFoA.aGVsbG8=.JtIYnoo6jyvlrwfLXHUjgjzOra7lUqSf+gt"
    "qlxtWxNMyGfK1l2pXJ8wdSK6O78nHw0dU5LqQG+GlibrW6KukBQ=="
)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return fake_clock(monkeypatch, curve_mod, ca_mod)


CA_MODE = 'require-ca = true\ncert-path = "{user}"\n'
HOME_MODE = "require-ca = false\n"


def ca_table(root: Path) -> dict[str, Any]:
    """Our [ca]: certs good for an hour, signatures for 300 s."""
    return signconf.ca_table(root, **{"max-cert-ttl": 3600, "max-sign-ttl": 300})


@dataclass
class Pki:
    """A CA and a CA-signed user cert (userid = our uid) under ``root``."""

    root: Path
    ca: CA

    @property
    def user(self) -> str:
        return str(self.root / "u")

    def context(
        self,
        name: str = "signer",
        *,
        max_ttl: int = 60,
        curve: str | None = CA_MODE,
        ca: dict[str, Any] | None = None,
        no_ca: bool = False,
    ) -> Context:
        """A context on its own config dir ``root/name``; None omits a table."""
        text = (
            f"[sign]\nmax-ttl = {max_ttl}\n"
            'default-type = "curve"\nallowed-types = [ "curve", "none" ]\n'
        )
        if curve is not None:
            text += "[sign.curve]\n" + curve.format(user=self.user)
        if not no_ca:
            table = ca_table(self.root) if ca is None else ca
            text += "[ca]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
        where = self.root / name
        where.mkdir(exist_ok=True)
        return make_context(where, text)


def new_pki(root: Path) -> Pki:
    authority = CA(ca_table(root))
    authority.keygen()
    authority.store()
    return Pki(root, authority)


@pytest.fixture
def pki(tmp_path: Path, clock: Clock) -> Pki:
    ours = new_pki(tmp_path)
    user = Cert.create()
    ours.ca.sign(user, 0, UID)
    user.store(ours.user)
    return ours


def error(func: Any, *args: Any) -> str:
    with pytest.raises(SignError) as info:
        func(*args)
    return info.value.text


def split(token: str) -> tuple[KV, str]:
    """The header of ``token`` and its base64 payload."""
    head, payload, _ = token.split(".", 2)
    return KV.decode(base64.b64decode(head)), payload


def forge(header: KV, payload: str, signer: Cert) -> str:
    data = base64.b64encode(header.encode()).decode() + "." + payload
    return data + "." + signer.sign_detached(data.encode())


def reforge(token: str, signer: Cert, change: Any) -> str:
    """``token`` with its header changed by ``change(header)`` and re-signed."""
    header, payload = split(token)
    change(header)
    return forge(header, payload, signer)


# -- vectors signed and verified by the C library --------------------------------
def _vector_cases() -> list[Any]:
    path = VECTORS / "curve-ca.json"
    if not path.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{path} not found"))]
    cases = json.loads(path.read_text())["cases"]
    return [pytest.param(case, id=case["name"]) for case in cases]


@pytest.fixture
def vector_ctx(tmp_path: Path) -> Context:
    shutil.copy(VECTORS / "ca.pub", tmp_path / "ca.pub")
    (tmp_path / "revoke.d").mkdir()
    toml = (VECTORS / "sign.toml.in").read_text().replace("@DIR@", str(tmp_path))
    return make_context(tmp_path, toml)


@pytest.mark.parametrize("case", _vector_cases())
def test_vector(case: dict[str, Any], vector_ctx: Context) -> None:
    if case["name"].startswith("none") and UID != 0:
        pytest.skip("the none vectors are signed for uid 0; run as root")
    verify = unwrap_anymech if case["anymech"] else unwrap
    expect = case["expect"]
    if expect["ok"]:
        got = verify(vector_ctx, case["J"])
        assert got.userid == expect["userid"]
        assert got.payload == base64.b64decode(expect["payload"])
    else:
        assert error(verify, vector_ctx, case["J"]) == expect["error"]


# -- signing ---------------------------------------------------------------------------
def test_known_answer(tmp_path: Path, clock: Clock) -> None:
    (tmp_path / "sig").write_text(KAT_SECRET)
    (tmp_path / "sig.pub").write_text(KAT_PUBLIC)
    ctx = make_context(
        tmp_path,
        '[sign]\nmax-ttl = 315360000\ndefault-type = "curve"\nallowed-types = ["curve"]\n'
        f'[sign.curve]\nrequire-ca = false\ncert-path = "{tmp_path}/sig"\n',
    )
    assert wrap_as(ctx, 65534, b"hello", "curve") == KAT_TOKEN
    assert unwrap(ctx, KAT_TOKEN, NOVERIFY).payload == b"hello"


def test_header_layout(pki: Pki) -> None:
    token = wrap(pki.context(), b"x")
    header, _ = split(token)
    user = Cert.load(pki.user)
    assert header.keys() == [
        "version", "mechanism", "userid",
        *("curve.cert.meta." + key for key, _, _ in user.meta.items()),
        "curve.cert.curve.public-key", "curve.cert.curve.signature",
        "curve.ctime", "curve.xtime",
    ]  # fmt: skip
    assert header.get_time("curve.ctime") == NOW
    assert header.get_time("curve.xtime") == NOW + 60
    assert len(token.rsplit(".", 1)[1]) == 88


def test_xtime_follows_signer_max_ttl(pki: Pki) -> None:
    header, _ = split(wrap(pki.context(max_ttl=-100), b""))
    assert header.get_time("curve.xtime") == NOW - 100


@pytest.mark.parametrize("payload", [b"hello", b""])
def test_round_trip_with_ca(pki: Pki, payload: bytes) -> None:
    got = unwrap(pki.context("verifier"), wrap(pki.context("signer"), payload))
    assert got == (payload, UID, "curve")


def test_prep_missing_cert(pki: Pki) -> None:
    ctx = pki.context(curve='require-ca = true\ncert-path = "/noexist"\n')
    assert error(wrap, ctx, b"") == "sign-curve-prep: load /noexist: No such file or directory"


def test_prep_cert_without_secret(pki: Pki) -> None:
    os.unlink(pki.user)
    assert error(wrap, pki.context(), b"") == (
        f"sign-curve-prep: load {pki.user}: No such file or directory"
    )


def test_signer_cert_is_loaded_once_per_context(pki: Pki) -> None:
    ctx = pki.context()
    first = wrap(ctx, b"a")
    os.unlink(pki.user + ".pub")
    assert split(wrap(ctx, b"a"))[0] == split(first)[0]
    assert "load" in error(wrap, pki.context("fresh"), b"")


# -- init ---------------------------------------------------------------------------
def test_init_needs_sign_curve(pki: Pki) -> None:
    ctx = pki.context(curve=None)
    msg = "sign-curve-init: [sign.curve] config missing"
    assert error(wrap, ctx, b"") == msg
    assert error(unwrap, ctx, wrap(pki.context("ok"), b"")) == msg


@pytest.mark.parametrize(
    "curve,msg",
    [
        ('cert-path = "/x"\n', "'require-ca' must be set"),
        ("require-ca = 1\n", "'require-ca' must be of type bool"),
        ("require-ca = true\ncert-path = 1\n", "'cert-path' must be of type string"),
        ("require-ca = true\nfoo = 1\n", "key 'foo' is unknown"),
        ("require-ca = true\n[sign.curve.sub]\n", "key 'sub' is unknown"),
    ],
)
def test_init_checks_sign_curve_strictly(pki: Pki, curve: str, msg: str) -> None:
    assert error(wrap, pki.context(curve=curve), b"") == f"sign-curve-init: [curve] config: {msg}"


# -- verify: header and signature --------------------------------------------------
@pytest.mark.parametrize("drop", ["curve.ctime", "curve.xtime", "curve.cert.curve.public-key"])
def test_incomplete_header(pki: Pki, drop: str) -> None:
    token = reforge(wrap(pki.context(), b""), Cert.load(pki.user, True), lambda h: h.delete(drop))
    assert error(unwrap, pki.context(), token) == "sign-curve-verify: incomplete header"


def test_incomplete_header_without_cert(pki: Pki) -> None:
    def drop_cert(header: KV) -> None:
        for key, _, _ in list(header.items()):
            if key.startswith("curve.cert."):
                header.delete(key)

    token = reforge(wrap(pki.context(), b""), Cert.load(pki.user, True), drop_cert)
    assert error(unwrap, pki.context(), token) == "sign-curve-verify: incomplete header"


@pytest.mark.parametrize(
    "key,typ,raw",
    [
        ("curve.ctime", "i", b"1"),  # wrong type reads as missing
        ("curve.cert.curve.public-key", "s", b"AAAA"),
        ("curve.cert.curve.signature", "s", b"AAAA"),
    ],
)
def test_incomplete_header_bad_entries(pki: Pki, key: str, typ: str, raw: bytes) -> None:
    token = reforge(
        wrap(pki.context(), b""), Cert.load(pki.user, True), lambda h: h.put_raw(key, typ, raw)
    )
    assert error(unwrap, pki.context(), token) == "sign-curve-verify: incomplete header"


def test_cert_signature_of_other_type_reads_as_absent(pki: Pki) -> None:
    token = reforge(
        wrap(pki.context(), b""),
        Cert.load(pki.user, True),
        lambda h: h.put_int("curve.cert.curve.signature", 1),
    )
    assert error(unwrap, pki.context(), token) == (
        "sign-curve-verify: ca: signature verification failed"
    )


def test_unparseable_timestamps_read_as_zero(pki: Pki) -> None:
    token = reforge(
        wrap(pki.context(), b""),
        Cert.load(pki.user, True),
        lambda h: h.put_raw("curve.xtime", "t", b"junk"),
    )
    assert error(unwrap, pki.context(), token) == "sign-curve-verify: xtime or max-ttl exceeded"


TAMPER = {
    "payload changed": lambda t: t.split(".")[0] + ".Ym9ndXM=." + t.split(".")[2],
    "trailing newline": lambda t: t + "\n",
    "signature changed": lambda t: t[:-4] + "AAA=",
    "signature none": lambda t: t.rsplit(".", 1)[0] + ".none",
    "signature empty": lambda t: t.rsplit(".", 1)[0] + ".",
    "signature with dot": lambda t: t + ".",
}


@pytest.mark.parametrize("tamper", TAMPER.values(), ids=TAMPER.keys())
def test_verification_failure(pki: Pki, tamper: Any) -> None:
    token = wrap(pki.context(), b"hello")
    assert unwrap(pki.context("v"), token).payload == b"hello"
    assert error(unwrap, pki.context("v2"), tamper(token)) == (
        "sign-curve-verify: verification failure"
    )


def test_verification_failure_other_signer(pki: Pki) -> None:
    token = reforge(wrap(pki.context(), b""), Cert.create(), lambda h: None)
    assert error(unwrap, pki.context(), token) == "sign-curve-verify: verification failure"


# -- verify: CA mode --------------------------------------------------------------------
def test_ca_config_missing(pki: Pki) -> None:
    token = wrap(pki.context(), b"")
    verifier = pki.context("v", no_ca=True)
    assert error(unwrap, verifier, token) == "sign-curve-verify: [ca] config missing"


def test_ca_config_checked_strictly(pki: Pki) -> None:
    token = wrap(pki.context(), b"")
    table = ca_table(pki.root)
    del table["domain"]
    assert error(unwrap, pki.context("v", ca=table), token) == (
        "sign-curve-verify: ca: 'domain' must be set"
    )


def test_ca_cert_missing(pki: Pki) -> None:
    token = wrap(pki.context(), b"")
    os.unlink(pki.root / "ca.pub")
    assert error(unwrap, pki.context("v"), token) == (
        f"sign-curve-verify: ca: {pki.root}/ca: No such file or directory"
    )


def test_ca_is_loaded_once_per_context(pki: Pki) -> None:
    verifier = pki.context("v")
    token = wrap(pki.context(), b"")
    unwrap(verifier, token)
    os.unlink(pki.root / "ca.pub")
    unwrap(verifier, token)


def test_ca_unsigned_cert(pki: Pki) -> None:
    user = Cert.load(pki.user, True)
    user.signature = None
    user.store(pki.user)
    token = wrap(pki.context(), b"")
    assert error(unwrap, pki.context("v"), token) == (
        "sign-curve-verify: ca: signature verification failed"
    )


def test_ca_cert_lacks_capability(pki: Pki) -> None:
    token = wrap(pki.context(), b"")
    assert pki.ca.cert is not None
    pki.ca.cert.meta_set("ca-capability", False)
    pki.ca.cert.sign_cert(pki.ca.cert)
    pki.ca.store()
    assert error(unwrap, pki.context("v"), token) == (
        "sign-curve-verify: ca: ca certificate lacks ca-capability"
    )


def test_ca_cert_missing_metadata(pki: Pki) -> None:
    user = Cert.load(pki.user, True)
    user.meta.delete("max-sign-ttl")
    assert pki.ca.cert is not None
    pki.ca.cert.sign_cert(user)
    user.store(pki.user)
    assert error(unwrap, pki.context("v"), wrap(pki.context(), b"")) == (
        "sign-curve-verify: ca: required metadata is missing from cert"
    )


def test_ca_cert_expired(pki: Pki, clock: Clock) -> None:
    token = wrap(pki.context(max_ttl=100000), b"")
    clock.now += 3601
    assert error(unwrap, pki.context("v", max_ttl=100000), token) == (
        "sign-curve-verify: ca: cert has expired"
    )


def test_ca_cert_not_yet_valid(pki: Pki) -> None:
    user = Cert.load(pki.user, True)
    pki.ca.sign(user, 10, UID, NOW + 5)
    user.store(pki.user)
    assert error(unwrap, pki.context("v"), wrap(pki.context(), b"")) == (
        "sign-curve-verify: ca: cert is not yet valid"
    )


def test_ca_cert_revoked(pki: Pki) -> None:
    token = wrap(pki.context(), b"")
    pki.ca.revoke(str(Cert.load(pki.user).meta.get_str("uuid")))
    assert error(unwrap, pki.context("v"), token) == "sign-curve-verify: ca: cert has been revoked"


def test_ca_userid_mismatch(pki: Pki) -> None:
    token = wrap_as(pki.context(), UID + 1, b"")
    assert error(unwrap, pki.context("v"), token) == "sign-curve-verify: ca: userid mismatch"


def test_ca_checks_come_before_expiry(pki: Pki) -> None:
    token = wrap_as(pki.context(max_ttl=-100), UID + 1, b"")
    assert error(unwrap, pki.context("v"), token) == "sign-curve-verify: ca: userid mismatch"


# -- verify: times -----------------------------------------------------------------------
def test_verifier_max_ttl_minus_100_expires_everything(pki: Pki) -> None:
    token = wrap(pki.context(), b"")
    assert error(unwrap, pki.context("v", max_ttl=-100), token) == (
        "sign-curve-verify: xtime or max-ttl exceeded"
    )


@pytest.mark.parametrize(("signer_ttl", "verifier_ttl", "lifetime", "text"), [
    (1000, 1000, 300, "ca: max-sign-ttl exceeded"),  # the CA's max-sign-ttl is 300
    (10, 100, 10, "xtime or max-ttl exceeded"),  # the header's xtime
], ids=["ca-max-sign-ttl", "header-xtime"])  # fmt: skip
def test_token_verifies_until_the_end_of_its_lifetime(
    pki: Pki, clock: Clock, signer_ttl: int, verifier_ttl: int, lifetime: int, text: str
) -> None:
    token = wrap(pki.context(max_ttl=signer_ttl), b"")
    verifier = pki.context("v", max_ttl=verifier_ttl)
    clock.now += lifetime
    unwrap(verifier, token)
    clock.now += 1
    assert error(unwrap, verifier, token) == f"sign-curve-verify: {text}"


def test_verifier_max_ttl_passed(pki: Pki, clock: Clock) -> None:
    token = wrap(pki.context(max_ttl=100), b"")
    clock.now += 11
    assert error(unwrap, pki.context("v", max_ttl=10), token) == (
        "sign-curve-verify: xtime or max-ttl exceeded"
    )


def test_ctime_in_the_future(pki: Pki, clock: Clock) -> None:
    clock.now += 10  # the cert must already be valid at verify time
    token = wrap(pki.context(), b"")
    clock.now -= 1
    assert error(unwrap, pki.context("v"), token) == "sign-curve-verify: ctime is in the future"


# -- verify: home directory mode ------------------------------------------------------
@pytest.fixture
def homes(monkeypatch: pytest.MonkeyPatch) -> dict[int, Path]:
    """Fake passwd: uid -> home directory, for the uids put in the dict."""
    table: dict[int, Path] = {}

    def getpwuid(uid: int) -> pwd.struct_passwd:
        if uid not in table:
            raise KeyError(uid)
        return pwd.struct_passwd(("u", "x", uid, uid, "", str(table[uid]), "/bin/sh"))

    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    return table


@dataclass
class Home:
    """Our uid's home with a cert in .flux/curve/sig, and contexts for it."""

    pki: Pki
    sig: Path

    def store(self, cert: Cert) -> Cert:
        self.sig.parent.mkdir(parents=True, exist_ok=True)
        cert.store(str(self.sig))
        return cert

    def context(self, name: str, curve: str = HOME_MODE) -> Context:
        return self.pki.context(name, curve=curve, no_ca=True)


@pytest.fixture
def home(tmp_path: Path, homes: dict[int, Path], clock: Clock) -> Home:
    homes[UID] = tmp_path / "home"
    ours = Home(Pki(tmp_path, CA(ca_table(tmp_path))), tmp_path / "home/.flux/curve/sig")
    ours.store(Cert.create())
    return ours


def test_home_round_trip(home: Home) -> None:
    token = wrap(home.context("signer"), b"hi")
    assert unwrap(home.context("v"), token) == (b"hi", UID, "curve")


def test_home_lookup_uses_32_bit_uid(home: Home) -> None:
    token = wrap_as(home.context("signer"), UID + 2**32, b"")
    assert unwrap(home.context("v"), token).userid == UID + 2**32


def test_home_cert_changed(home: Home) -> None:
    token = wrap(home.context("signer"), b"")
    home.store(Cert.create())
    assert error(unwrap, home.context("v"), token) == "sign-curve-verify: cert verification failed"


def test_home_cert_metadata_reordered(home: Home) -> None:
    cert = Cert.create()
    cert.meta_set("a", 1)
    cert.meta_set("b", 2)
    token = wrap(home.context("signer"), b"")
    home.store(cert)
    token = wrap(home.context("s2"), b"")
    assert unwrap(home.context("v"), token).userid == UID
    cert.meta_set("a", 1)  # now algorithm, b, a
    home.store(cert)
    assert error(unwrap, home.context("v2"), token) == (
        "sign-curve-verify: cert verification failed"
    )


def test_home_cert_removed(home: Home) -> None:
    token = wrap(home.context("signer"), b"")
    os.unlink(str(home.sig) + ".pub")
    assert error(unwrap, home.context("v"), token) == (
        f"sign-curve-verify: error loading cert from {home.sig}"
    )


def test_home_unknown_user(home: Home) -> None:
    token = wrap_as(home.context("signer"), 4242, b"")
    assert error(unwrap, home.context("v"), token) == (
        "sign-curve-verify: error loading cert from unknown user"
    )


def test_home_mode_signer_without_passwd_entry(home: Home, homes: dict[int, Path]) -> None:
    del homes[UID]
    assert error(wrap, home.context("signer"), b"") == "Invalid argument"


def test_home_mode_verify_ignores_cert_path(home: Home, tmp_path: Path) -> None:
    Cert.create().store(str(tmp_path / "other"))
    token = wrap(home.context("signer"), b"")
    verifier = home.context("v", f'{HOME_MODE}cert-path = "{tmp_path}/other"\n')
    assert unwrap(verifier, token).userid == UID


# -- import cost ------------------------------------------------------------------------
def test_none_mechanism_does_not_import_nacl(tmp_path: Path) -> None:
    (tmp_path / "sign.toml").write_text(
        '[sign]\nmax-ttl = 30\ndefault-type = "none"\nallowed-types = ["none", "curve"]\n'
    )
    code = (
        "import sys\n"
        "from flux_imp.sign import Context, DISABLE_PATH_PARANOIA, wrap, unwrap\n"
        "ctx = Context(DISABLE_PATH_PARANOIA)\n"
        f"ctx.configure({str(tmp_path / '*.toml')!r})\n"
        "unwrap(ctx, wrap(ctx, b'x'))\n"
        "assert 'nacl' not in sys.modules, 'nacl imported'\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)


def test_allowing_curve_does_not_import_it(tmp_path: Path) -> None:
    # Validating [sign] checks the names; only a J's mechanism is imported.
    (tmp_path / "sign.toml").write_text(
        '[sign]\nmax-ttl = 30\ndefault-type = "curve"\nallowed-types = ["curve", "none"]\n'
    )
    code = (
        "import sys\n"
        "from flux_imp.sign import Context, DISABLE_PATH_PARANOIA, wrap, unwrap\n"
        "ctx = Context(DISABLE_PATH_PARANOIA)\n"
        f"ctx.configure({str(tmp_path / '*.toml')!r})\n"
        "unwrap(ctx, wrap(ctx, b'x', 'none'))\n"
        "assert 'flux_imp.sign.curve' not in sys.modules, 'curve imported'\n"
        "assert 'flux_imp.sign.none' in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)


# -- prepare_verify: the IMP's parent, before its J comes ------------------------------
def test_prepare_verify_loads_the_ca_before_any_token(pki: Pki) -> None:
    token = wrap(pki.context(), b"x")
    verifier = pki.context("v")
    token_mod.prepare_verify(verifier)
    os.unlink(pki.root / "ca.pub")  # loaded already: no longer read
    assert unwrap(verifier, token) == (b"x", UID, "curve")


def test_prepare_verify_leaves_a_failure_to_the_verify(pki: Pki) -> None:
    """Same error as without it, and at the same point: the verify."""
    token = wrap(pki.context(), b"")
    os.unlink(pki.root / "ca.pub")
    expected = error(unwrap, pki.context("plain"), token)
    assert expected.startswith("sign-curve-verify: ca: ")
    verifier = pki.context("v")
    token_mod.prepare_verify(verifier)  # no exception
    assert error(unwrap, verifier, token) == expected


def test_prepare_verify_raises_for_an_invalid_sign_table(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, '[sign]\nmax-ttl = 0\ndefault-type = "none"\n'
                                 'allowed-types = ["none"]\n')
    assert error(token_mod.prepare_verify, ctx) == error(token_mod.sign_config, ctx)
