"""Audit records: one syslog line per decision (RFC 15 asks for an audit
log of every invocation; upstream only writes stderr, INTEROP.md section 6).

Records go to syslog(3) (facility authpriv, ident ``flux-imp``, with the
pid), as::

    exec half=privileged caller_uid=1001 caller="alice" ... outcome="allowed"

Every string is quoted; ``"`` and ``\\`` are escaped with a backslash and
any other byte outside printable ASCII is written ``\\xHH``, so a record is
one line and no value can forge another field or record.  Long values are
cut (a ``...`` after the closing quote says so) so that a record always
fits in one datagram; nothing is dropped silently.
"""

from __future__ import annotations

import os
import syslog

from .log import ImpError

# Annotations only: typing, collections and contextlib cost start-up time.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType
    from typing import Union

    Value = Union[str, int, Sequence[str], None]  # None: the field is left out

    from hashlib import sha256
else:
    # CPython's own SHA-256 where it is built in (FIPS builds leave it out):
    # hashlib loads OpenSSL's libcrypto, which costs start-up time and the
    # lingering parent memory.  Same digest either way.
    try:
        from _sha2 import sha256  # 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # 3.9 to 3.11
        except ImportError:
            from hashlib import sha256

_MAX_TEXT = 1024  # characters of one string value
_MAX_ITEMS = 64  # strings of one list value


def quote(text: str) -> str:
    """``text`` as a double-quoted, printable-ASCII token."""
    cut = len(text) > _MAX_TEXT
    out = ['"']
    for char in text[:_MAX_TEXT]:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogateescape"))
    out.append('"...' if cut else '"')
    return "".join(out)


def render(value: str | int | Sequence[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    items = [quote(item) for item in value[:_MAX_ITEMS]]
    if len(value) > _MAX_ITEMS:
        items.append("...")
    return "[" + ",".join(items) + "]"


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, for records (e.g. of a J)."""
    return sha256(data).hexdigest()


def format_record(event: str, outcome: str, fields: dict[str, Value]) -> str:
    parts = [event]
    parts += [f"{key}={render(value)}" for key, value in fields.items() if value is not None]
    parts.append(f"outcome={quote(outcome)}")
    return " ".join(parts)


def record(event: str, outcome: str, **fields: Value) -> None:
    """Log one decision; ``outcome`` is ``allowed`` or ``refused: <reason>``."""
    priority = syslog.LOG_NOTICE if outcome == "allowed" else syslog.LOG_WARNING
    # Opened and closed per record: no log socket may leak into the job.
    syslog.openlog("flux-imp", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
    try:
        syslog.syslog(priority, format_record(event, outcome, fields))
    finally:
        syslog.closelog()


class Trail:
    """One invocation's audit record, filled in as facts become known."""

    def __init__(self, event: str, half: str) -> None:
        self.event = event
        self.fields: dict[str, Value] = {"half": half, "caller_uid": os.getuid()}

    def note(self, **fields: Value) -> None:
        self.fields.update(fields)

    def decide(self, outcome: str, **fields: Value) -> None:
        record(self.event, outcome, **self.fields, **fields)

    def refusals(self) -> _Refusals:
        """Record any failure inside the block as a refusal, then re-raise."""
        return _Refusals(self)


class _Refusals:
    """Trail.refusals()'s context manager (contextlib costs start-up time)."""

    def __init__(self, trail: Trail) -> None:
        self.trail = trail

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, ImpError):
            self.trail.decide(f"refused: {exc.message}")
        elif isinstance(exc, Exception):
            self.trail.decide(f"refused: internal error: {exc!r}")
        # Returns None: the exception (and any other, SystemExit...) goes on.
