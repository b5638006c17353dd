"""``flux-imp casign``, the unprivileged half: runs as the caller.

Reads the public cert on stdin (at most MAX_INPUT bytes) and sends it to
the parent.  Not setuid, it signs itself, as upstream does, if the caller
can read the CA's key.
"""

from __future__ import annotations

import errno
import sys

from ...sign import b64
from ...sign.cert import Cert, CertError
from ...sign.kv import KV
from .. import audit
from ..casign_rules import KV_PREFIX, MAX_INPUT, sign_and_print, step
from ..log import die, log
from ..state import Imp


def _read_cert() -> Cert:
    """The public cert on stdin (the launcher made sure fd 0 is open)."""
    with step("decode cert"):
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
            kv.join(cert.to_kv(), KV_PREFIX)
            imp.ps.send(kv, "casign")
            return  # the parent decides and audits
        # As upstream, for tests: it signs only if the caller can read the CA key.
        log.warn("casign: imp is not installed setuid, proceeding anyway...")
        sign_and_print(imp, cert, trail)
