"""What a privileged command's judgement returns: a Refusal, or a plan.

Each privileged half is a judgement followed by its effects: ``judge()``
is a function, with no side effect, from the decoded request, the loaded
configurations and the caller to either a :class:`Refusal` carrying
upstream's message or a complete plan of what will happen; the effects
then carry out that plan and nothing else.  Plans are plain typed values
with ``as_dict()`` (JSON-able, for printing and the admin dry run).

Plain classes: dataclasses and typing cost every command start-up time.
"""

from __future__ import annotations

from .log import ImpError

TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from typing import NoReturn


class Refusal:
    """The IMP will not act: ``message`` is what follows ``flux-imp: Fatal: ``."""

    __slots__ = ("code", "message")

    def __init__(self, message: str, code: int = 1) -> None:
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"Refusal({self.message!r}, code={self.code})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Refusal) and (other.message, other.code) == (
            self.message, self.code)

    def __hash__(self) -> int:
        return hash((self.message, self.code))

    def as_dict(self) -> dict[str, object]:
        return {"refused": self.message, "code": self.code}

    def raise_(self) -> NoReturn:
        """Fail as die() would (the audit trail records it as the outcome)."""
        raise ImpError(self.message, self.code)


def refusal_of(exc: ImpError) -> Refusal:
    """A check that died: its message as a Refusal."""
    return Refusal(exc.message, exc.code)


class Caller:
    """Who ran the IMP: real ids and name (None: no passwd entry), umask."""

    __slots__ = ("gid", "name", "uid", "umask")

    def __init__(self, uid: int, gid: int, name: str | None, umask: int) -> None:
        self.uid = uid
        self.gid = gid
        self.name = name
        self.umask = umask

    def __repr__(self) -> str:
        return f"Caller(uid={self.uid}, gid={self.gid}, name={self.name!r}, umask={self.umask:04o})"

    def as_dict(self) -> dict[str, object]:
        return {"uid": self.uid, "gid": self.gid, "name": self.name,
                "umask": f"{self.umask:04o}"}  # fmt: skip
