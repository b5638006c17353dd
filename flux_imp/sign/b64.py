"""Base64 exactly as libsodium's ORIGINAL variant: canonical and strict."""

from __future__ import annotations

import binascii

# binascii, not base64: base64 imports re, which costs the IMP (verifying J
# in both halves) milliseconds.  b64encode() is b2a_base64 without newline.


def encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def decode(text: str | bytes) -> bytes:
    """Decode strictly; raise ValueError on anything libsodium rejects.

    Python's decoder accepts non-canonical input (stray low bits, some
    padding forms), so the result is re-encoded and compared.
    """
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    try:
        data = binascii.a2b_base64(raw)
    except (binascii.Error, ValueError):
        data = None
    # Canonical input decodes the same leniently and strictly; anything
    # else is refused by the strict path, which words the error.
    if data is not None and binascii.b2a_base64(data, newline=False) == raw:
        return data
    return _decode_strict(raw)


def _decode_strict(raw: bytes) -> bytes:
    import base64

    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("invalid base64") from exc
    if base64.b64encode(data) != raw:
        raise ValueError("non-canonical base64")
    return data


def decode_sized(text: str | bytes, size: int) -> bytes:
    """Decode a key or signature that must be exactly ``size`` bytes."""
    data = decode(text)
    if len(data) != size:
        raise ValueError(f"expected {size} bytes")
    return data
