"""The ``none`` mechanism: no signature, valid only for the real uid."""

from __future__ import annotations

import posix

from .errors import SignError

TYPE_CHECKING = False  # annotations only: typing costs start-up time
if TYPE_CHECKING:
    from typing import Any

    from .context import Context
    from .kv import KV


class NoneMech:
    name = "none"

    def init(self, ctx: Context, sign_cfg: dict[str, Any]) -> None:
        pass

    def prep(self, ctx: Context, header: KV) -> None:
        pass

    def sign(self, ctx: Context, data: bytes) -> str:
        return "none"

    def verify(self, ctx: Context, header: KV, data: bytes, signature: bytes) -> None:
        # Upstream checks the uid before the signature text.
        userid = header.get_int("userid")
        real = posix.getuid()
        if userid != real:
            raise SignError(f"sign-none-verify: header userid {userid} != real {real}")
        if signature != b"none":
            raise SignError("sign-none-verify: signature invalid")


MECH = NoneMech()
