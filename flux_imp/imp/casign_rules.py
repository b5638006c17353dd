"""``flux-imp casign``: the site CA signs the caller's curve certificate
(upstream casign.c).

The child reads the public cert TOML on stdin and sends it to the parent,
which binds it to the caller's real uid for ``ca.max-cert-ttl`` seconds
with the CA of the IMP config's ``[ca]``, and writes the signed public
cert on stdout.  The CA's secret key is read by the parent only, after the
child has exited: the half that parses the caller's input never has it in
its memory.

Signing is a judgement, then its effects (both halves use them: an IMP
that is not setuid signs in its only process):

* :func:`judge` (cert, config, caller) -> :class:`CasignPlan` or a
  Refusal: checks ``[ca]`` and loads the CA's *public* cert, as a root
  process that is not the IMP may too (an admin dry run); it never reads
  the secret key and has no side effect;
* :func:`carry_out` (plan, trail): loads the secret key, signs, records
  the signature, writes the cert.

Refusals are audited by the half that refuses, a signature by the half
that signs (with the cert's public key and new uuid).
"""

from __future__ import annotations

import contextlib
import errno
import posix
import sys
from collections.abc import Iterator

from ..fs import lexists
from ..sign import b64
from ..sign.ca import CA, CAError
from ..sign.cert import Cert, CertError
from . import audit
from .log import ImpError, die
from .state import Imp
from .verdict import Caller, Refusal, refusal_of

# Annotations only (mypy reads the flag as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .impconfig import ImpConfig

KV_PREFIX = "cert"  # upstream's privsep keys: "certmeta.<k>", "certcurve.public-key"
# Not upstream (10 MiB): the most of stdin read.  A cert is under 1 KiB, and
# every local user may make the privileged half decode and sign what is sent.
MAX_INPUT = 1024 * 1024
# What the CA decides only when it signs (CA._sign_with): not in any plan.
AT_SIGNING = ("uuid", "not-valid-before-time", "ctime", "xtime", "signature")


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Turn a failure of one step into upstream's ``casign: <name>: <error>``."""
    try:
        yield
    except (CAError, CertError) as exc:
        die(f"casign: {name}: {exc.text}")


class CasignPlan:
    """What signing ``cert`` will do: the CA at ``ca_cert_path`` (its public
    cert loaded, its secret key not) binds the cert to ``signer_uid`` for
    ``ttl`` seconds and the signed public cert goes to stdout.

    ``refusal``: upstream's ca_sign checks come after the secret key is
    loaded, so a key that fails to load wins over them; when the judgement
    already knows that ca_sign will refuse, the effects load the key, then
    refuse with it.  The fields of AT_SIGNING are decided at signing time.
    """

    __slots__ = ("ca", "ca_capability", "cert", "domain", "issuer", "max_sign_ttl",
                 "public_key", "refusal", "signer_uid", "ttl")  # fmt: skip

    def __init__(
        self, ca: CA, cert: Cert, signer_uid: int, ttl: int, max_sign_ttl: int, domain: str,
        issuer: str | None, refusal: Refusal | None,
    ) -> None:
        self.ca = ca  # public cert loaded, secret key not
        self.cert = cert  # the caller's, unsigned: carry_out signs a copy
        self.public_key: str = b64.encode(cert.public_key)
        self.signer_uid = signer_uid  # the cert's userid
        self.ttl = ttl
        self.max_sign_ttl = max_sign_ttl
        self.domain = domain
        self.issuer = issuer  # the CA cert's uuid
        self.ca_capability = False  # a user cert may not sign certs
        self.refusal = refusal

    @property
    def ca_cert_path(self) -> str:
        return self.ca.cert_path

    def __repr__(self) -> str:
        return (f"CasignPlan(public_key={self.public_key!r}, signer_uid={self.signer_uid}, "
                f"ca_cert_path={self.ca_cert_path!r}, issuer={self.issuer!r}, "
                f"domain={self.domain!r}, ttl={self.ttl}, max_sign_ttl={self.max_sign_ttl}, "
                f"refusal={self.refusal!r})")  # fmt: skip

    def as_dict(self) -> dict[str, object]:
        path = self.ca_cert_path
        return {
            "command": "casign",
            "public_key": self.public_key,
            "signer_uid": self.signer_uid,
            "request_metadata": {key: raw.decode("utf-8", "surrogateescape")
                                 for key, _, raw in self.cert.meta.items()},
            "ca": {"cert_path": path, "public_cert": path + ".pub",
                   "secret_key": path,  # read by carry_out only
                   "max_cert_ttl": self.ttl, "max_sign_ttl": self.max_sign_ttl,
                   "domain": self.domain, "uuid": self.issuer},
            "ttl": self.ttl,  # casign asks for 0: max-cert-ttl
            "sets": {"userid": self.signer_uid, "max-sign-ttl": self.max_sign_ttl,
                     "issuer": self.issuer, "domain": self.domain,
                     "ca-capability": self.ca_capability},
            "decided_at_signing": list(AT_SIGNING),  # xtime = not-valid-before-time + ttl
            "writes": "stdout: the signed public cert",
            "refused_after_key_load": None if self.refusal is None else self.refusal.message,
        }



def _load_public(ca: CA) -> None:
    """CA.load(secret=True) but for reading the secret key: its path checks
    (root: both files, .pub first) then the public cert, so a refusal here
    is the one signing would give first.  The loop mirrors CA.load's (it
    belongs in sign/ca.py, as a CA method both would call)."""
    path = ca.cert_path
    if posix.geteuid() == 0:
        from ..conf.pathcheck import PathError, path_is_secure

        # As CA.load: a missing file is left to Cert.load, for upstream's message.
        for name in (path + ".pub", path):
            try:
                if lexists(name):
                    path_is_secure(name)
            except PathError as exc:
                raise CAError(f"{name}: {exc.text}") from None
    ca.load(secret=False)


def judge(cert: Cert, conf: ImpConfig, caller: Caller) -> CasignPlan | Refusal:
    """Should the CA of ``conf``'s ``[ca]`` sign ``cert`` for ``caller``?

    Reads ``[ca]`` and, from its ``cert-path``, the CA's public cert (and,
    as root, the two files' and their directories' metadata); never the
    secret key.  No side effect."""
    try:
        table = conf.section("ca")
        if table is None:
            die("casign: no [ca] configuration")
        with step("ca_create"):
            ca = CA(table)
        with step("ca_load"):
            _load_public(ca)
    except ImpError as exc:
        return refusal_of(exc)
    assert ca.cert is not None  # loaded
    # The CA's own accessors, so the plan reads [ca] as signing will.
    max_cert_ttl = ca._int("max-cert-ttl")
    issuer = ca.cert.meta.get_str("uuid")
    # CA._sign_with's checks that need no secret key, in its order; casign
    # asks for ttl 0, which the CA reads as max-cert-ttl.
    refusal = None
    if max_cert_ttl < 0:
        refusal = Refusal(f"casign: ca_sign: ttl must be <= {max_cert_ttl}")
    elif issuer is None:
        refusal = Refusal(f"casign: ca_sign: {posix.strerror(errno.ENOENT)}")
    return CasignPlan(ca, cert, caller.uid, max_cert_ttl, ca._int("max-sign-ttl"),
                      ca._str("domain"), issuer, refusal)


def carry_out(plan: CasignPlan, trail: audit.Trail) -> None:
    """Load the CA's secret key, sign, record the signature, write the cert."""
    with step("ca_load"):
        plan.ca.load(secret=True)  # checks the paths again, just before reading
    if plan.refusal is not None:
        plan.refusal.raise_()
    cert = plan.cert.copy()
    with step("ca_sign"):
        plan.ca.sign(cert, 0, plan.signer_uid)  # ttl 0: the CA's max-cert-ttl
    # Recorded before anything is written: with audit-required, a record
    # that cannot be kept stops the cert from reaching the caller.
    trail.decide("allowed", uuid=cert.meta.get_str("uuid"),
                 xtime=cert.meta.get_time("xtime"))  # fmt: skip
    try:
        sys.stdout.buffer.write(cert.dumps().encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
    except OSError as exc:
        die(f"casign: write stdout: {exc.strerror}")


def sign_and_print(imp: Imp, cert: Cert, trail: audit.Trail) -> None:
    """Judge, then carry out (the half that signs: see the module docstring)."""
    verdict = judge(cert, imp.conf, imp.caller())
    if isinstance(verdict, Refusal):
        verdict.raise_()
    carry_out(verdict, trail)
