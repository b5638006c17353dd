"""Base64 exactly as libsodium's ORIGINAL variant: canonical and strict."""

from __future__ import annotations

import base64
import binascii


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str | bytes) -> bytes:
    """Decode strictly; raise ValueError on anything libsodium rejects.

    Python's decoder accepts non-canonical input (stray low bits, some
    padding forms), so the result is re-encoded and compared.
    """
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
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
