"""The caller's environment, held as data (never our own environment)."""

from __future__ import annotations

TYPE_CHECKING = False  # annotations only: collections.abc costs start-up time
if TYPE_CHECKING:
    from collections.abc import Iterator


class CallerEnv:
    """``NAME=VALUE`` byte strings in caller order, read like getenv(3)."""

    def __init__(self, entries: list[bytes]) -> None:
        self.entries = [e for e in entries if b"=" in e]

    def get(self, name: str) -> str | None:
        """The first ``name=`` entry, as getenv(3) returns it."""
        key = name.encode("utf-8", "surrogateescape") + b"="
        for entry in self.entries:
            if entry.startswith(key):
                return entry[len(key) :].decode("utf-8", "surrogateescape")
        return None

    def items(self) -> Iterator[tuple[str, str]]:
        for entry in self.entries:
            name, _, value = entry.partition(b"=")
            yield (name.decode("utf-8", "surrogateescape"),
                   value.decode("utf-8", "surrogateescape"))

    def without(self, names: frozenset[str]) -> list[bytes]:
        """The entries whose name is not in ``names``."""
        return [e for e in self.entries
                if e.partition(b"=")[0].decode("utf-8", "surrogateescape") not in names]
