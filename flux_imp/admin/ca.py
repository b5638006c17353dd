"""``flux-security ca``: create the curve CA's cert pair, revoke a cert.

Both go through the signing library's CA (flux_imp.sign.ca) and Cert, the
code casign and the verifiers run: ``create`` is CA.keygen (upstream's
self-signed metadata) written with Cert.store_new, as flux-sign keygen
writes; ``revoke`` is CA.revoke, the revoke-dir/UUID entry CA.verify
refuses.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ..paths import SYSCONFDIR, security_config_pattern
from ..sign import Context, SignError
from ..sign.ca import CA
from ..sign.cert import Cert, CertError
from ..sign.cli import _KEYGEN_REFUSALS
from .errors import AdminError

# Defaults as packaging/examples/sign-curve-ca.toml: a year, two weeks.
MAX_CERT_TTL, MAX_SIGN_TTL = 31536000, 1209600


def _cert_error(path: str, exc: CertError) -> AdminError:
    refusal = _KEYGEN_REFUSALS.get(exc.errno)
    if refusal is not None and exc.filename is not None:
        return AdminError(f"{exc.filename}: {refusal}")
    return AdminError(f"{path}: {exc.text}")


def create(path: str, domain: str, max_cert_ttl: int, max_sign_ttl: int, ttl: int = 0,
           force: bool = False) -> dict[str, Any]:
    """Write a new CA pair ``path`` (0600) and ``path``.pub (0644); its metadata."""
    # CA() checks a whole [ca] table; keygen reads only the TTLs and domain,
    # so the revocation keys are placeholders that nothing reads.
    table = {"max-cert-ttl": max_cert_ttl, "max-sign-ttl": max_sign_ttl, "cert-path": path,
             "revoke-dir": "", "revoke-allow": False, "domain": domain}
    try:
        authority = CA(table)
        authority.keygen(ttl=ttl)
    except SignError as exc:
        raise AdminError(f"ca create: {exc.text}") from exc
    cert = authority.cert
    assert cert is not None  # keygen set it or raised
    try:
        cert.store_new(path, replace=force)
    except CertError as exc:
        raise _cert_error(path, exc) from exc
    return describe(path, cert)


def describe(path: str, cert: Cert) -> dict[str, Any]:
    """A cert's identity and validity, as JSON-able values."""
    meta = cert.meta
    return {"cert": path, "public": path + ".pub", "uuid": meta.get_str("uuid"),
            "domain": meta.get_str("domain"), "userid": meta.get_int("userid"),
            "max-sign-ttl": meta.get_int("max-sign-ttl"),
            "not-valid-before-time": meta.get_time("not-valid-before-time"),
            "xtime": meta.get_time("xtime"), "ca-capability": meta.get_bool("ca-capability")}


def _ca_table(sysconfdir: str) -> Any:
    """The [ca] table the verifiers load (the signing library's config)."""
    ctx = Context()
    try:
        ctx.configure(security_config_pattern(sysconfdir))
        return ctx.get_config("ca")
    except SignError as exc:
        raise AdminError(f"ca revoke: {exc.text} (or give --revoke-dir)") from exc


def revoke(cert_path: str, revoke_dir: str | None, sysconfdir: str) -> dict[str, Any]:
    """Revoke the cert at ``cert_path`` (its .pub or its base name)."""
    name = cert_path[: -len(".pub")] if cert_path.endswith(".pub") else cert_path
    try:
        cert = Cert.load(name)
    except CertError as exc:
        raise AdminError(f"ca revoke: {name}.pub: {exc.text}") from exc
    cert_uuid = cert.meta.get_str("uuid")
    if not cert_uuid:
        raise AdminError(f"ca revoke: {name}.pub: has no uuid")
    if revoke_dir is None:
        table = _ca_table(sysconfdir)
    else:
        # Only revoke-dir and revoke-allow are read by CA.revoke.
        table = {"max-cert-ttl": 0, "max-sign-ttl": 0, "cert-path": "",
                 "revoke-dir": revoke_dir, "revoke-allow": True, "domain": ""}
    try:
        authority = CA(table)
        authority.revoke(cert_uuid)
    except SignError as exc:
        raise AdminError(f"ca revoke: {exc.text}") from exc
    directory = revoke_dir if revoke_dir is not None else table["revoke-dir"]
    return {"uuid": cert_uuid, "revoked": os.path.join(directory, cert_uuid)}


@click.group()
def ca() -> None:
    """Create the curve CA's certificate; revoke certificates."""


@ca.command("create")
@click.option("--cert", "path", required=True, metavar="PATH",
              help="Write the secret cert PATH (0600) and PATH.pub (0644).")
@click.option("--domain", default="FLUX", show_default=True, help="The CA's domain.")
@click.option("--max-cert-ttl", type=click.IntRange(min=1), default=MAX_CERT_TTL,
              show_default=True, metavar="S", help="Longest validity of a cert it signs.")
@click.option("--max-sign-ttl", type=click.IntRange(min=1), default=MAX_SIGN_TTL,
              show_default=True, metavar="S", help="Written into the CA cert's metadata.")
@click.option("--ttl", type=click.IntRange(min=0), default=0, metavar="S",
              help="The CA cert's own validity (default: --max-cert-ttl).")
@click.option("--force", is_flag=True, help="Replace an existing pair (atomically).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def create_cmd(path: str, domain: str, max_cert_ttl: int, max_sign_ttl: int, ttl: int,
               force: bool, as_json: bool) -> None:
    """Create the CA certificate pair; refuse to overwrite one."""
    got = create(path, domain, max_cert_ttl, max_sign_ttl, ttl, force)
    if as_json:
        click.echo(json.dumps(got))
    else:
        click.echo(f"created {got['cert']} (0600) and {got['public']} (0644): "
                   f"uuid {got['uuid']}, domain {got['domain']}, "
                   f"valid {got['not-valid-before-time']}..{got['xtime']}")


@ca.command("revoke")
@click.argument("cert_path", metavar="CERT")
@click.option("--revoke-dir", metavar="DIR",
              help="Write the entry here (default: ca.revoke-dir of the signing config).")
@click.option("--sysconfdir", default=SYSCONFDIR, show_default=True, metavar="DIR",
              help="Read DIR/flux/security/conf.d for the [ca] table.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def revoke_cmd(cert_path: str, revoke_dir: str | None, sysconfdir: str, as_json: bool) -> None:
    """Revoke CERT: create revoke-dir/UUID, which verifiers refuse."""
    got = revoke(cert_path, revoke_dir, sysconfdir)
    click.echo(json.dumps(got) if as_json else f"revoked {got['uuid']}: {got['revoked']}")
