"""``flux-imp casign``, the privileged half: runs as root.

Only after the child has exited does it decode the cert the child sent;
then the judgement (casign_rules.judge: [ca] and the CA's public cert)
and its effects (casign_rules.carry_out: only they load the CA's secret
key).  The half that parsed the caller's input never has the key in its
memory.
"""

from __future__ import annotations

from ...sign import b64
from ...sign.cert import Cert
from ...sign.kv import KV
from .. import audit
from ..casign_rules import KV_PREFIX, sign_and_print, step
from ..privsep import require_child_ok
from ..state import Imp


def decode(kv: KV) -> Cert:
    """The cert the child sent (upstream's ``casign: decode cert`` refusal)."""
    with step("decode cert"):
        return Cert.from_kv(kv.split(KV_PREFIX))


def parent(imp: Imp, kv: KV) -> None:
    trail = audit.Trail("casign", "privileged")
    with trail.refusals():
        # Upstream does not wait; we reap the child before touching the CA key.
        require_child_ok(imp.ps, "casign")
        cert = decode(kv)
        trail.note(public_key=b64.encode(cert.public_key))
        sign_and_print(imp, cert, trail)  # judge, then carry out
