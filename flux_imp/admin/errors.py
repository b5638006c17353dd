"""The admin layer's one error type: a message and the exit code it means."""

from __future__ import annotations


class AdminError(Exception):
    """A failure a subcommand reports as ``flux-security: <message>``.

    Raise it anywhere below a command; the group (cli.LazyGroup) prints the
    one line on stderr and exits with ``code``, so no command catches it.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
