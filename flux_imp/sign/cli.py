"""flux-sign: an unprivileged admin tool over the signing library.

Thin click commands; all logic is in the library.  Exit status, as
man/flux-sign.1 says: 0 on success; 1 when signing, verifying, loading the
configuration or writing a cert fails, after the library's one-line message
on stderr; 2 for a usage error (click's UsageError: unknown command or
option, missing argument, bad option value).
"""

from __future__ import annotations

import base64
import errno
import json
import os
import sys
from typing import NoReturn

import click

from .. import __version__
from ..paths import SECURITY_CONFIG_PATTERN
from . import NOVERIFY, Context, SignError, unwrap, unwrap_anymech, wrap_as

_MECHS = click.Choice(["none", "curve", "munge"])


def _fail(text: str) -> NoReturn:
    click.echo(text, err=True)
    sys.exit(1)


def _context(pattern: str | None) -> Context:
    # Only this unprivileged tool honours the environment override.
    ctx = Context()
    ctx.configure(pattern or os.environ.get("FLUX_SECURITY_CONFIG_PATTERN")
                  or SECURITY_CONFIG_PATTERN)
    return ctx


_config_opt = click.option(
    "--config", "pattern", metavar="PATTERN",
    help="Signing config glob (default: $FLUX_SECURITY_CONFIG_PATTERN or "
    f"{SECURITY_CONFIG_PATTERN}).",
)


# no_args_is_help=False: a bare "flux-sign" is a usage error (exit 2) with
# every click version (8.1 printed the help and exited 0, 8.2 exits 2).
@click.group(no_args_is_help=False)
@click.version_option(__version__, prog_name="flux-sign", message="%(prog)s %(version)s",
                      help="Print the version and exit.")
def main() -> None:
    """Sign and verify Flux job requests (J) like libflux-security."""


@main.command()
@_config_opt
@click.option("--mech", type=_MECHS, help="Mechanism (default: sign.default-type).")
@click.option("--userid", type=int, help="Sign on behalf of this uid (default: real uid).")
def sign(pattern: str | None, mech: str | None, userid: int | None) -> None:
    """Sign the payload read from stdin; print J."""
    payload = sys.stdin.buffer.read()
    try:
        ctx = _context(pattern)
        token = wrap_as(ctx, os.getuid() if userid is None else userid, payload, mech)
    except SignError as exc:
        _fail(exc.text)
    click.echo(token)


@main.command()
@_config_opt
@click.option("--any-mech", is_flag=True, help="Do not enforce sign.allowed-types.")
@click.option("--no-verify", is_flag=True, help="Decode only; do not check the signature.")
def verify(pattern: str | None, any_mech: bool, no_verify: bool) -> None:
    """Verify J read from stdin (trailing white space ignored); print JSON."""
    token = sys.stdin.buffer.read().rstrip(b" \t\n\v\f\r")
    flags = NOVERIFY if no_verify else 0
    try:
        ctx = _context(pattern)
        result = (unwrap_anymech if any_mech else unwrap)(ctx, token, flags)
    except SignError as exc:
        _fail(exc.text)
    click.echo(json.dumps({
        "userid": result.userid,
        "mechanism": result.mechanism,
        "payload": base64.b64encode(result.payload).decode("ascii"),
    }))


def _meta_value(text: str) -> str | bool | int:
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text, 10)
    except ValueError:
        return text


_KEYGEN_REFUSALS = {
    errno.EEXIST: "already exists (--force replaces the pair)",
    errno.ELOOP: "is a symbolic link, not written through",
}


@main.command()
@click.argument("path")
@click.option("--meta", multiple=True, metavar="KEY=VALUE",
              help="Add certificate metadata (true/false and integers are typed).")
@click.option("--force", is_flag=True, help="Replace an existing pair (atomically).")
def keygen(path: str, meta: tuple[str, ...], force: bool) -> None:
    """Write a new curve cert pair PATH (0600) and PATH.pub (0644)."""
    from .cert import Cert, CertError

    try:
        cert = Cert.create()
        for item in meta:
            key, sep, value = item.partition("=")
            if not sep or not key:
                _fail(f"keygen: --meta {item}: expected KEY=VALUE")
            cert.meta_set(key, _meta_value(value))
        cert.store_new(path, replace=force)
    except CertError as exc:
        refusal = _KEYGEN_REFUSALS.get(exc.errno)
        if refusal is not None and exc.filename is not None:
            _fail(f"keygen: {exc.filename}: {refusal}")
        _fail(f"keygen: {exc}")


if __name__ == "__main__":
    main()
