"""``flux-imp whoami``, the privileged half: a judgement that cannot
refuse, then its one effect."""

from __future__ import annotations

from ...sign.kv import KV
from ..state import Imp
from ..whoami import print_ids


class WhoamiPlan:
    """Print this process's real and effective ids (read when printed)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"WhoamiPlan(prefix={self.prefix!r})"

    def as_dict(self) -> dict[str, object]:
        ids = "uid=<uid> euid=<euid> gid=<gid> egid=<egid>"  # this process's, when printed
        return {"command": "whoami", "writes": "stdout", "prints": f"{self.prefix}: {ids}"}


def judge() -> WhoamiPlan:
    return WhoamiPlan("flux-imp: privileged")


def carry_out(plan: WhoamiPlan) -> None:
    print_ids(plan.prefix)


def parent(imp: Imp, kv: KV) -> None:
    carry_out(judge())
