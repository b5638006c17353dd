"""The config layer's error: upstream's struct cf_error as an exception."""

from __future__ import annotations

from ..text import truncate

# cf_error: errbuf[200] and filename[PATH_MAX + 1], filled by snprintf/strlcpy.
_MAX_TEXT = 199
_MAX_FILENAME = 4096


class ConfigError(Exception):
    """A load or check failure with file, line (-1: unknown) and text."""

    def __init__(self, filename: str, lineno: int, text: str) -> None:
        self.filename = truncate(filename, _MAX_FILENAME)
        self.lineno = lineno
        self.text = truncate(text, _MAX_TEXT)
        super().__init__(self.text)
