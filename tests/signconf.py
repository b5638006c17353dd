"""Helpers shared by signing tests: write a config, get a Context."""

from __future__ import annotations

from pathlib import Path

from flux_imp.sign import DISABLE_PATH_PARANOIA, Context

NONE_ONLY = """\
[sign]
max-ttl = 30
default-type = "none"
allowed-types = [ "none" ]
"""


def make_context(tmp: Path, toml: str, name: str = "sign.toml") -> Context:
    """Write ``toml`` under ``tmp/conf.d`` and configure a Context on it."""
    confdir = tmp / "conf.d"
    confdir.mkdir(exist_ok=True)
    (confdir / name).write_text(toml)
    ctx = Context(DISABLE_PATH_PARANOIA)
    ctx.configure(str(confdir / "*.toml"))
    return ctx
