"""Ed25519 through libsodium: the compiled cffi module pynacl ships, directly.

``nacl.bindings``, pynacl's wrappers, imports every binding it has (AEAD,
box, pwhash, ...: about 25 ms with Debian's python3-nacl) where curve needs
four functions.  ``nacl._sodium`` (``ffi`` and ``lib``, built against the
system libsodium in a distribution's package) costs a few.  Both halves of
the IMP verify J, and its privileged parent keeps what it imported for the
job's life.  Return codes are checked as pynacl's wrappers check them, with
their messages; sizes are checked before C reads a buffer.
"""

from __future__ import annotations

TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from typing import Any

PUBLIC_KEY_BYTES = 32
SECRET_KEY_BYTES = 64  # libsodium's: the seed, then the public key
SIGNATURE_BYTES = 64

# Every name of nacl._sodium.lib used here (tests check that a pynacl has them).
SYMBOLS = (
    "sodium_init",
    "crypto_sign_bytes",
    "crypto_sign_publickeybytes",
    "crypto_sign_secretkeybytes",
    "crypto_sign_keypair",
    "crypto_sign",
    "crypto_sign_open",
)

_binding: tuple[Any, Any] | None = None


def _load() -> tuple[Any, Any]:
    """(ffi, lib), imported and libsodium initialised on first use."""
    global _binding
    if _binding is None:
        from nacl._sodium import ffi, lib

        if lib.sodium_init() == -1:  # 1: initialised before (by pynacl, say)
            raise RuntimeError("Could not initialize sodium")
        sizes = (lib.crypto_sign_publickeybytes(), lib.crypto_sign_secretkeybytes(),
                 lib.crypto_sign_bytes())  # fmt: skip
        if sizes != (PUBLIC_KEY_BYTES, SECRET_KEY_BYTES, SIGNATURE_BYTES):
            raise RuntimeError("Unexpected library error")  # not the Ed25519 we know
        _binding = ffi, lib
    return _binding


def ready() -> None:
    """Import the binding and initialise libsodium now rather than at the
    first call (2 ms here): for a verifier with time to spare (curve's warm())."""
    _load()


def keypair() -> tuple[bytes, bytes]:
    """A fresh (public key, secret key) from libsodium's random source."""
    ffi, lib = _load()
    public = ffi.new("unsigned char[]", PUBLIC_KEY_BYTES)
    secret = ffi.new("unsigned char[]", SECRET_KEY_BYTES)
    if lib.crypto_sign_keypair(public, secret) != 0:
        raise RuntimeError("Unexpected library error")
    keys: tuple[bytes, bytes] = (ffi.buffer(public)[:], ffi.buffer(secret)[:])
    return keys


def sign_detached(data: bytes, secret_key: bytes) -> bytes:
    """The 64-byte signature of ``data`` by ``secret_key``.

    crypto_sign() with the 64-byte key is exactly libsodium's detached
    signature (which pynacl does not bind): it uses the key's embedded
    public half, as upstream's crypto_sign_detached() does."""
    if len(secret_key) != SECRET_KEY_BYTES:
        raise ValueError("Invalid secret key")
    ffi, lib = _load()
    signed = ffi.new("unsigned char[]", len(data) + SIGNATURE_BYTES)
    if lib.crypto_sign(signed, ffi.NULL, data, len(data), secret_key) != 0:
        raise RuntimeError("Unexpected library error")
    signature: bytes = ffi.buffer(signed, SIGNATURE_BYTES)[:]
    return signature


def verify_detached(signature: bytes, data: bytes, public_key: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s signature of ``data``."""
    if len(signature) != SIGNATURE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    ffi, lib = _load()
    signed = signature + data
    message = ffi.new("unsigned char[]", len(signed))
    rc: int = lib.crypto_sign_open(message, ffi.NULL, signed, len(signed), public_key)
    return rc == 0
