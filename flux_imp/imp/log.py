"""Messages on stderr in upstream's format (src/imp/imp_log.c).

``flux-imp: <msg>`` for info, else ``flux-imp: <Level>: <msg>``.  Callers
(flux-core's job-exec, tests) parse these lines, so the format, the 4096
byte limit and the control-character scrubbing are upstream's.
"""

from __future__ import annotations

import posix

# Annotations only: every command imports this module, and typing costs
# milliseconds of start-up (mypy reads the flag as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

DEBUG, INFO, WARNING, FATAL = 7, 6, 4, 0
_NAMES = {DEBUG: "Debug", WARNING: "Warning", FATAL: "Fatal"}
_LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING}
_MAX = 4096


class ImpError(Exception):
    """A fatal condition: main() prints ``Fatal: <msg>`` and exits ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def scrub(message: str) -> bytes:
    """Format as upstream: cut to 4095 bytes (last '+'), strip CR/LF, hide controls."""
    raw = message.encode("utf-8", "surrogateescape")
    if len(raw) >= _MAX:
        raw = raw[: _MAX - 2] + b"+"
    raw = raw.rstrip(b"\r\n")
    return bytes(b if (b >= 0x20 and b != 0x7F) or b == 0x09 else 0x3F for b in raw)


class Log:
    def __init__(self) -> None:
        self.level = INFO

    def set_level(self, name: str) -> bool:
        level = _LEVELS.get(name)
        if level is None:
            return False
        self.level = level
        return True

    def _emit(self, level: int, message: str) -> None:
        if level > self.level:
            return
        prefix = b"flux-imp: "
        if level != INFO:
            prefix += _NAMES[level].encode() + b": "
        # If stderr is gone there is nowhere to report; the exit code still tells.
        try:  # noqa: SIM105 - contextlib costs start-up time
            posix.write(2, prefix + scrub(message) + b"\n")
        except OSError:
            pass

    def debug(self, message: str) -> None:
        self._emit(DEBUG, message)

    def info(self, message: str) -> None:
        self._emit(INFO, message)

    def warn(self, message: str) -> None:
        self._emit(WARNING, message)

    def fatal(self, message: str) -> None:
        self._emit(FATAL, message)


log = Log()


def die(message: str, code: int = 1) -> NoReturn:
    raise ImpError(message, code)
