"""``flux-imp casign``: the site CA signs the caller's curve certificate
(upstream casign.c).

The child reads the public cert TOML on stdin and sends it to the parent,
which binds it to the caller's real uid for ``ca.max-cert-ttl`` seconds
with the CA of the IMP config's ``[ca]``, and writes the signed public
cert on stdout.  The CA's secret key is read by the parent only, after the
child has exited: the half that parses the caller's input never has it in
its memory.

Refusals are audited by the half that refuses, a signature by the half
that signs (with the cert's public key and new uuid).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator

from ..sign import b64
from ..sign.ca import CA, CAError
from ..sign.cert import Cert, CertError
from ..sign.kv import KV
from . import audit
from .log import die, log
from .state import Imp

_KV_PREFIX = "cert"  # upstream's privsep keys: "certmeta.<k>", "certcurve.public-key"
# Not upstream (10 MiB): the most of stdin read.  A cert is under 1 KiB, and
# every local user may make the privileged half decode and sign what is sent.
MAX_INPUT = 1024 * 1024

@contextlib.contextmanager
def _step(name: str) -> Iterator[None]:
    """Turn a failure of one step into upstream's ``casign: <name>: <error>``."""
    try:
        yield
    except (CAError, CertError) as exc:
        die(f"casign: {name}: {exc.text}")


def _sign_and_print(imp: Imp, cert: Cert, trail: audit.Trail) -> None:
    table = imp.conf.section("ca")
    if table is None:
        die("casign: no [ca] configuration")
    with _step("ca_create"):
        ca = CA(table)
    with _step("ca_load"):
        ca.load(secret=True)
    with _step("ca_sign"):
        ca.sign(cert, 0, os.getuid())  # ttl 0: the CA's max-cert-ttl
    # Recorded before anything is written: with audit-required, a record
    # that cannot be kept stops the cert from reaching the caller.
    trail.decide("allowed", uuid=cert.meta.get_str("uuid"),
                 xtime=cert.meta.get_time("xtime"))  # fmt: skip
    try:
        sys.stdout.buffer.write(cert.dumps().encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
    except OSError as exc:
        die(f"casign: write stdout: {exc.strerror}")


def _read_cert() -> Cert:
    """The public cert on stdin (the launcher made sure fd 0 is open)."""
    with _step("decode cert"):
        try:
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        except OSError as exc:
            raise CertError(exc.errno or errno.EIO) from exc
        if len(data) > MAX_INPUT:
            die(f"casign: decode cert: input too large (more than {MAX_INPUT} bytes)")
        return Cert.loads(data)


def child(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("casign", "unprivileged")
    with trail.refusals():
        cert = _read_cert()
        trail.note(public_key=b64.encode(cert.public_key))
        if imp.ps is not None:
            kv.join(cert.to_kv(), _KV_PREFIX)
            imp.ps.send(kv, "casign")
            return  # the parent decides and audits
        # As upstream, for tests: it signs only if the caller can read the CA key.
        log.warn("casign: imp is not installed setuid, proceeding anyway...")
        _sign_and_print(imp, cert, trail)


def parent(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("casign", "privileged")
    with trail.refusals():
        # Upstream does not wait; we reap the child before touching the CA key.
        if imp.ps is None:
            die("casign: unprivileged process exited abnormally")
        imp.ps.require_child_ok("casign")
        with _step("decode cert"):
            cert = Cert.from_kv(kv.split(_KV_PREFIX))
        trail.note(public_key=b64.encode(cert.public_key))
        _sign_and_print(imp, cert, trail)
