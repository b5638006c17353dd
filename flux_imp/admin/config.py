"""``flux-security config``: the merged configuration the IMP (or the
signing library) would load, each key with the file it came from.

Loads with the loaders the IMP and the library use (cf.load_glob, the
library's Context.configure) and flags keys with the IMP's own lint
(impconfig.lint) or the library's own [sign] check (token.sign_config).
"""

from __future__ import annotations

import json
from typing import Any

import click

from .. import conf as cf
from ..conf import cglob
from ..imp import impconfig
from ..paths import SYSCONFDIR, imp_config_pattern, security_config_pattern
from ..sign import Context, SignError
from ..sign.token import sign_config
from .errors import AdminError


def sources(pattern: str, merged: dict[str, Any]) -> dict[str, list[str]]:
    """Top-level key -> every file that sets it, in glob order.

    Upstream's merge is a shallow update per top-level key, so the last
    file wins and the earlier ones' whole table is dropped.  Each file is
    read with the loader's own load_file; paranoia off, because the merged
    load just passed the same files through it.
    """
    found: dict[str, list[str]] = {}
    for path in cglob.glob(pattern):
        for key in cf.load_file(path, paranoid=False):
            found.setdefault(key, []).append(path)
    return {key: found[key] for key in merged if key in found}


def imp_view(sysconfdir: str) -> dict[str, Any]:
    """What the IMP of an installed (non-test) build loads, and its lint."""
    pattern = imp_config_pattern(sysconfdir)
    try:
        merged, count = cf.load_glob(pattern)
    except cf.ConfigError as exc:
        # The IMP's own warning before "Failed to load configuration".
        raise AdminError(f"loading config: {exc.filename}: {exc.lineno}: {exc.text}") from exc
    if count == 0:
        raise AdminError(f"{pattern}: No config file(s) found")
    findings = [{"key": key, "message": text} for key, text in impconfig.lint(merged)]
    return _view("imp", pattern, merged, findings)


def sign_view(sysconfdir: str) -> dict[str, Any]:
    """What the signing library loads by default, and its [sign] check."""
    pattern = security_config_pattern(sysconfdir)
    ctx = Context()
    try:
        ctx.configure(pattern)
    except SignError as exc:
        raise AdminError(exc.text) from exc
    assert ctx.config is not None  # configure() set it or raised
    findings = []
    try:
        sign_config(ctx)
    except SignError as exc:
        findings.append({"key": "sign", "message": exc.text})
    return _view("sign", pattern, ctx.config, findings)


def _view(kind: str, pattern: str, merged: dict[str, Any],
          findings: list[dict[str, str]]) -> dict[str, Any]:
    setters = sources(pattern, merged)
    return {"kind": kind, "pattern": pattern, "files": cglob.glob(pattern),
            "config": merged, "sources": {k: v[-1] for k, v in setters.items()},
            "replaced": {k: v[:-1] for k, v in setters.items() if len(v) > 1},
            "findings": findings}


def _lines(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) for every leaf of ``table``."""
    out: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, dict) and value:
            out.extend(_lines(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def render(view: dict[str, Any]) -> str:
    """The text form: one ``key = value  # file`` a line, then the findings."""
    files = view["files"]
    lines = [f"# {view['pattern']}: {len(files)} file{'' if len(files) == 1 else 's'}"]
    for top, value in view["config"].items():
        where = view["sources"].get(top, "?")
        for key, leaf in _lines({top: value}):
            lines.append(f"{key} = {json.dumps(leaf, default=str)}  # {where}")
    for top, earlier in view["replaced"].items():
        lines.append(f"# {top}: replaces the one in {', '.join(earlier)} (shallow merge)")
    lines += [f"WARN {f['key']}: {f['message']}" for f in view["findings"]]
    return "\n".join(lines)


@click.command()
@click.option("--imp", "kind", flag_value="imp", default=True,
              help="The IMP's configuration (imp/conf.d; the default).")
@click.option("--sign", "kind", flag_value="sign",
              help="The signing library's configuration (security/conf.d).")
@click.option("--sysconfdir", default=SYSCONFDIR, show_default=True, metavar="DIR",
              help="Read DIR/flux/... instead of the built-in sysconfdir.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def config(kind: str, sysconfdir: str, as_json: bool) -> None:
    """Show the merged configuration, each key's file, and unknown keys.

    Exit 0 when it loads (unknown keys are warnings, as in the IMP),
    1 when it does not load.
    """
    view = imp_view(sysconfdir) if kind == "imp" else sign_view(sysconfdir)
    click.echo(json.dumps(view, default=str) if as_json else render(view))
