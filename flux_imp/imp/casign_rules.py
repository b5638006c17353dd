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
import os
import sys
from collections.abc import Iterator

from ..sign.ca import CA, CAError
from ..sign.cert import Cert, CertError
from . import audit
from .log import die
from .state import Imp

KV_PREFIX = "cert"  # upstream's privsep keys: "certmeta.<k>", "certcurve.public-key"
# Not upstream (10 MiB): the most of stdin read.  A cert is under 1 KiB, and
# every local user may make the privileged half decode and sign what is sent.
MAX_INPUT = 1024 * 1024


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Turn a failure of one step into upstream's ``casign: <name>: <error>``."""
    try:
        yield
    except (CAError, CertError) as exc:
        die(f"casign: {name}: {exc.text}")


def sign_and_print(imp: Imp, cert: Cert, trail: audit.Trail) -> None:
    table = imp.conf.section("ca")
    if table is None:
        die("casign: no [ca] configuration")
    with step("ca_create"):
        ca = CA(table)
    with step("ca_load"):
        ca.load(secret=True)
    with step("ca_sign"):
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
