"""What every signing mechanism provides (upstream's struct sign_mech)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .context import Context
    from .kv import KV


class Mechanism(Protocol):
    name: str

    def init(self, ctx: Context, sign_cfg: dict[str, Any]) -> None:
        """Validate mechanism config; called before every sign and verify."""

    def prep(self, ctx: Context, header: KV) -> None:
        """Add mechanism-specific header entries before encoding."""

    def sign(self, ctx: Context, data: bytes) -> str:
        """Return the SIGNATURE text over ``HEADER.PAYLOAD``."""

    def verify(self, ctx: Context, header: KV, data: bytes, signature: bytes) -> None:
        """Raise SignError unless ``signature`` authenticates ``data``."""
