"""The signing library's one error type."""

from __future__ import annotations

from ..text import truncate

# Upstream formats every context error into a 200-byte buffer.
_MAX_TEXT = 199


class SignError(Exception):
    """A signing or verification failure, carrying upstream's message text."""

    def __init__(self, text: str) -> None:
        self.text = truncate(text, _MAX_TEXT)
        super().__init__(self.text)
