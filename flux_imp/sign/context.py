"""The security context: loaded configuration and per-context caches."""

from __future__ import annotations

from .. import conf as cf
from ..paths import SECURITY_CONFIG_PATTERN
from . import DISABLE_PATH_PARANOIA, FORCE_PATH_PARANOIA
from .errors import SignError

TYPE_CHECKING = False  # annotations only: typing costs start-up time
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DISABLE_PATH_PARANOIA", "FORCE_PATH_PARANOIA", "Context"]


class Context:
    """Like ``flux_security_t``: configure once, then wrap/unwrap."""

    def __init__(self, flags: int = 0) -> None:
        if flags not in (0, DISABLE_PATH_PARANOIA, FORCE_PATH_PARANOIA):
            raise SignError("Invalid argument")
        self.flags = flags
        self.config: dict[str, Any] | None = None
        # Per-context state of mechanisms (validated tables, loaded certs).
        self.aux: dict[str, Any] = {}

    def configure(self, pattern: str | None = None) -> None:
        """Load every TOML file matching ``pattern`` (default: installed)."""
        if pattern is None:
            pattern = SECURITY_CONFIG_PATTERN
        base: dict[str, object] = {}
        if self.flags & DISABLE_PATH_PARANOIA:
            base["disable-path-paranoia"] = True
        if self.flags & FORCE_PATH_PARANOIA:
            base["enable-path-paranoia"] = True
        try:
            merged, count = cf.load_glob(pattern, base=base)
        except cf.ConfigError as exc:
            raise SignError(f"{exc.filename}::{exc.lineno}: {exc.text}") from exc
        if count == 0:
            raise SignError(f"pattern {pattern} matched nothing")
        self.config = merged
        self.aux.clear()

    def get_config(self, key: str) -> Any:
        """A top-level table (or value) of the configuration."""
        if self.config is None:
            raise SignError("configuration has not been loaded")
        if key not in self.config:
            raise SignError(f"configuration object '{key}' not found")
        return self.config[key]
