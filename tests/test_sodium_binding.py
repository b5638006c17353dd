"""libsodium through pynacl's compiled binding (flux_imp.sign.sodium).

Curve signs and verifies through ``nacl._sodium`` (pynacl's cffi module),
not pynacl's wrappers, which cost start-up time in both halves of the IMP.
These tests check that the binding has what we call, in the pynacl
installed here and in the distribution's, that the distribution's is linked
against the system libsodium, that the results are plain Ed25519, and that
signing and verifying never import the wrappers (nor the heavy stdlib
modules the curve path used to).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nacl
import nacl._sodium
import nacl.bindings
import pytest

from flux_imp.sign import sodium
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert

from . import signconf

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
NACL_SITE = str(Path(nacl.__file__).resolve().parents[1])

# RFC 8032, 7.1, TEST 1 (empty message) and TEST 2 (one byte).
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIG = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
RFC2_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC2_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC2_SIG = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da0"
    "85ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def pin() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """pyproject.toml's pynacl range, ">=A,<B", as (A, B)."""
    with open(ROOT / "pyproject.toml", "rb") as fp:
        text = fp.read().decode()
    line = next(line for line in text.splitlines() if line.strip().startswith('"pynacl'))
    spec = line.strip().strip('",').removeprefix("pynacl")
    lower, upper = spec.split(",")
    assert lower.startswith(">=") and upper.startswith("<"), spec
    return version(lower[2:]), version(upper[1:])


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def in_pin(found: str) -> bool:
    lower, upper = pin()
    return lower <= version(found) < upper


# -- the binding we call -------------------------------------------------------------
def test_binding_has_every_symbol_we_use() -> None:
    missing = [name for name in sodium.SYMBOLS if not hasattr(nacl._sodium.lib, name)]
    assert missing == []


def test_installed_pynacl_is_in_the_pin() -> None:
    assert in_pin(nacl.__version__), (nacl.__version__, pin())


def test_sizes_are_libsodiums() -> None:
    lib = nacl._sodium.lib
    found = (lib.crypto_sign_publickeybytes(), lib.crypto_sign_secretkeybytes(),
             lib.crypto_sign_bytes())  # fmt: skip
    assert found == (sodium.PUBLIC_KEY_BYTES, sodium.SECRET_KEY_BYTES, sodium.SIGNATURE_BYTES)


# -- plain Ed25519 -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("seed", "public", "message", "signature"),
    [(RFC_SEED, RFC_PUBLIC, b"", RFC_SIG), (RFC2_SEED, RFC2_PUBLIC, b"\x72", RFC2_SIG)],
)
def test_rfc8032_vectors(seed: bytes, public: bytes, message: bytes, signature: bytes) -> None:
    secret = seed + public  # libsodium's secret key
    assert sodium.sign_detached(message, secret) == signature
    assert sodium.verify_detached(signature, message, public)
    assert not sodium.verify_detached(signature, message + b"x", public)
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    assert not sodium.verify_detached(forged, message, public)


def test_keypair_matches_the_wrappers_on_its_seed() -> None:
    public, secret = sodium.keypair()
    assert (len(public), len(secret)) == (32, 64)
    assert nacl.bindings.crypto_sign_seed_keypair(secret[:32]) == (public, secret)
    assert sodium.keypair() != (public, secret)


def test_signatures_match_the_wrappers() -> None:
    public, secret = nacl.bindings.crypto_sign_seed_keypair(bytes(range(32)))
    for data in (b"", b"J", bytes(range(256)) * 40):
        signature = sodium.sign_detached(data, secret)
        assert nacl.bindings.crypto_sign(data, secret) == signature + data
        assert sodium.verify_detached(signature, data, public)


@pytest.mark.parametrize("size", [0, 31, 33, 63, 65])
def test_wrong_sizes_never_reach_c(size: int) -> None:
    public, secret = sodium.keypair()
    signature = sodium.sign_detached(b"x", secret)
    with pytest.raises(ValueError, match="Invalid secret key"):
        sodium.sign_detached(b"x", bytes(size))
    assert not sodium.verify_detached(signature, b"x", bytes(size))
    assert not sodium.verify_detached(bytes(size), b"x", public)
    assert not sodium.verify_detached((signature * 2)[:size], b"x", public)


# -- what signing and verifying import ----------------------------------------------
# pynacl's wrappers, and what the curve path used to import at run time.
NOT_IMPORTED = [
    "nacl.bindings", "nacl.signing", "nacl.public", "nacl.encoding", "nacl.exceptions",
    "typing", "dataclasses", "contextlib", "inspect", "re", "enum", "functools",
    "collections", "tomllib", "tomli", "datetime", "calendar", "locale", "uuid", "base64",
]  # fmt: skip


def run_isolated(python: str, site: str, code: str) -> str:
    """``code`` run by ``python -I -S`` with the checkout and ``site`` on sys.path."""
    prelude = f"import sys\nsys.path[:0] = [{str(ROOT)!r}, {site!r}]\n"
    done = subprocess.run([python, "-I", "-S", "-c", prelude + code], capture_output=True,
                          text=True, check=False, cwd="/")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def ca_mode_setup(tmp_path: Path) -> tuple[str, str]:
    """A CA, a user cert it signed, a CA-mode config; (config glob, J)."""
    table = signconf.ca_table(tmp_path, **{"max-cert-ttl": 3600, "max-sign-ttl": 300})
    authority = CA(table)
    authority.keygen()
    authority.store()
    user = Cert.create()
    authority.sign(user, 0, os.getuid())
    user.store(str(tmp_path / "u"))
    toml = (
        signconf.sign_table("curve", max_ttl=300)
        + f'[sign.curve]\nrequire-ca = true\ncert-path = "{tmp_path}/u"\n[ca]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    )
    ctx = signconf.make_context(tmp_path, toml)
    from flux_imp.sign import wrap

    return str(tmp_path / "conf.d" / "*.toml"), wrap(ctx, b"payload")


VERIFY = """
from flux_imp.sign import DISABLE_PATH_PARANOIA, Context, unwrap
ctx = Context(DISABLE_PATH_PARANOIA)
ctx.configure({glob!r})
assert unwrap(ctx, {token!r}).payload == b"payload"
import nacl._sodium
print(nacl._sodium.__file__)
print(sorted(name for name in {names!r} if name in sys.modules))
"""

SIGN = """
from flux_imp.sign import DISABLE_PATH_PARANOIA, Context, wrap
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert
authority = CA({table!r})
authority.keygen()
user = Cert.create()
authority.sign(user, 0, 0)
user.store({user!r})
ctx = Context(DISABLE_PATH_PARANOIA)
ctx.configure({glob!r})
assert wrap(ctx, b"x").count(".") == 2
print(sorted(name for name in {names!r} if name in sys.modules))
"""


def test_ca_mode_verify_imports_no_wrapper_nor_heavy_modules(tmp_path: Path) -> None:
    glob, token = ca_mode_setup(tmp_path)
    code = VERIFY.format(glob=glob, token=token, names=NOT_IMPORTED)
    binding, imported = run_isolated(sys.executable, NACL_SITE, code).splitlines()
    assert Path(binding).resolve() == Path(nacl._sodium.__file__).resolve()
    assert imported == "[]"


def test_keygen_ca_signing_and_signing_import_no_wrapper(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "sign.toml").write_text(
        signconf.sign_table("curve")
        + f'[sign.curve]\nrequire-ca = true\ncert-path = "{tmp_path}/u"\n'
    )
    wrappers = [name for name in NOT_IMPORTED if name.startswith("nacl.")]
    code = SIGN.format(table=signconf.ca_table(tmp_path), user=str(tmp_path / "u"),
                       glob=str(tmp_path / "conf.d" / "*.toml"), names=wrappers)  # fmt: skip
    assert run_isolated(sys.executable, NACL_SITE, code).strip() == "[]"


# -- the distribution's binding -------------------------------------------------------
def system_nacl() -> Path:
    found = sorted(Path(DIST_PACKAGES, "nacl").glob("_sodium*.so"))
    if not found or not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"no distribution pynacl in {DIST_PACKAGES}")
    return found[0]


def dpkg_owner(path: str) -> str:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a dpkg system")
    done = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True, check=False)
    assert done.returncode == 0, (path, done.stderr)
    return done.stdout.split(":", 1)[0]


MAPS = """
import os
from flux_imp.sign import sodium
import nacl, nacl._sodium
public, secret = sodium.keypair()
assert sodium.verify_detached(sodium.sign_detached(b"J", secret), b"J", public)
with open("/proc/self/maps") as fp:
    maps = sorted({line.split()[5] for line in fp if len(line.split()) > 5})
print(nacl.__version__)
print(nacl._sodium.__file__)
print(" ".join(p for p in maps if os.path.basename(p).startswith("libsodium")))
"""


def test_system_python_loads_the_distributions_binding_on_system_libsodium() -> None:
    shipped = system_nacl()
    # /usr/bin/python3 with its own sys.path (-I: no PYTHONPATH, no user site).
    prelude = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
    done = subprocess.run([SYSTEM_PYTHON, "-I", "-c", prelude + MAPS], capture_output=True,
                          text=True, check=False, cwd="/")  # fmt: skip
    assert done.returncode == 0, done.stderr
    found_version, binding, libsodium = done.stdout.splitlines()
    assert in_pin(found_version), (found_version, pin())
    assert Path(binding).resolve() == shipped.resolve()
    assert dpkg_owner(str(shipped)) == "python3-nacl"
    # Linked against the system library, not a copy built into the module:
    # a vendored libsodium (as in pynacl's wheels) maps no libsodium.so.
    libraries = libsodium.split()
    assert len(libraries) == 1, libraries
    assert Path(libraries[0]).name.startswith("libsodium.so.")
    assert dpkg_owner(libraries[0]).startswith("libsodium")
    ldd = subprocess.run(["ldd", str(shipped)], capture_output=True, text=True, check=True)
    assert "libsodium.so" in ldd.stdout, ldd.stdout


def test_distribution_binding_has_every_symbol_we_use() -> None:
    system_nacl()
    names = list(sodium.SYMBOLS)
    code = f"import nacl._sodium as s\nprint([n for n in {names!r} if not hasattr(s.lib, n)])\n"
    assert run_isolated(SYSTEM_PYTHON, DIST_PACKAGES, code).strip() == "[]"


WARM = """
from flux_imp.sign import DISABLE_PATH_PARANOIA, Context
from flux_imp.sign.token import prepare_verify
ctx = Context(DISABLE_PATH_PARANOIA)
ctx.configure({glob!r})
prepare_verify(ctx)
print("nacl._sodium" in sys.modules)
"""


def test_prepare_verify_loads_the_binding(tmp_path: Path) -> None:
    """The IMP readies curve before its fork, so neither half loads the
    binding (2 ms here) on the critical path of verifying J."""
    glob, _ = ca_mode_setup(tmp_path)
    assert run_isolated(sys.executable, NACL_SITE, WARM.format(glob=glob)) == "True\n"
