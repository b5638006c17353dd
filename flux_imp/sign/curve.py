"""The ``curve`` mechanism: Ed25519 signatures by a user certificate.

The signer's public cert travels in the header (``curve.cert.*``) with the
signing time (``curve.ctime``) and expiry (``curve.xtime``).  The verifier
authenticates the cert for the header's userid either because the CA signed
it (``require-ca = true``) or because it equals the cert in that user's home
directory.  Checks and messages follow upstream's sign_curve.c in order.
"""

from __future__ import annotations

import errno
import posix
import pwd
import time

from .. import conf as cf
from ..fs import fsencode
from . import sodium
from .ca import CA, CAError
from .cert import READ_LIMIT, Cert, CertError, c_string
from .errors import SignError
from .kv import KVError

# Annotations only: typing, dataclasses and contextlib cost both halves of
# the IMP (each verifies J) start-up time.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .context import Context
    from .kv import KV

_AUX = "flux::sign_curve"
_OPTS = (
    cf.Option("require-ca", "bool", True),
    cf.Option("cert-path", "string", False),
)
_CERT_PREFIX = "curve.cert."
_PATH_MAX = 4096
_EINVAL = posix.strerror(errno.EINVAL)


class _State:
    """Per-context state, created by the first successful init."""

    __slots__ = ("ca", "cert", "config", "max_ttl")

    def __init__(self, max_ttl: int, config: dict[str, Any]) -> None:
        self.max_ttl = max_ttl
        self.config = config
        self.cert: Cert | None = None  # the signer's cert, loaded on first prep
        self.ca: CA | None = None  # the CA, loaded on first CA-mode verify


def _state(ctx: Context) -> _State:
    state = ctx.aux[_AUX]
    assert isinstance(state, _State)
    return state


def _home_cert(uid: int) -> str | None:
    """``<home>/.flux/curve/sig`` of ``uid``, or None without a passwd entry."""
    user = _user(uid)
    return None if user is None else _home_cert_of(user)


def _user(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid % 2**32)  # C passes a uid_t
    except KeyError:
        return None


def _home_cert_of(user: pwd.struct_passwd) -> str:
    return f"{user.pw_dir}/.flux/curve/sig"


class CurveMech:
    name = "curve"

    def init(self, ctx: Context, sign_cfg: dict[str, Any]) -> None:
        if _AUX in ctx.aux:
            return
        table = sign_cfg.get("curve")
        if table is None:
            raise SignError("sign-curve-init: [sign.curve] config missing")
        try:
            cf.check(table, _OPTS, strict=True, anytab=False)
        except cf.ConfigError as exc:
            raise SignError(f"sign-curve-init: [curve] config: {exc.text}") from exc
        max_ttl = cf.as_int(sign_cfg.get("max-ttl"))
        ctx.aux[_AUX] = _State(max_ttl, dict(table))

    def prep(self, ctx: Context, header: KV) -> None:
        state = _state(ctx)
        if state.cert is None:
            if "cert-path" in state.config:  # a test override
                path: str | None = c_string(cf.as_str(state.config["cert-path"]))
            else:
                path = _home_cert(posix.getuid())
            if path is None or len(fsencode(path)) > _PATH_MAX:
                raise SignError(_EINVAL)
            try:
                state.cert = Cert.load(path, secret=True)
            except CertError as exc:
                raise SignError(f"sign-curve-prep: load {path}: {exc.text}") from exc
        ctime = int(time.time())
        try:
            header.join(state.cert.to_kv(), _CERT_PREFIX)
            header.put_time("curve.ctime", ctime)
            header.put_time("curve.xtime", ctime + state.max_ttl)
        except KVError as exc:
            raise SignError(_EINVAL) from exc

    def sign(self, ctx: Context, data: bytes) -> str:
        cert = _state(ctx).cert
        assert cert is not None  # prep loaded it
        try:
            return cert.sign_detached(data)
        except CertError as exc:
            raise SignError(f"sign-curve: {exc.text}") from exc

    def warm(self, ctx: Context) -> None:
        """Before any J: libsodium, and the CA a CA-mode verify will need."""
        sodium.ready()
        state = _state(ctx)
        if cf.as_bool(state.config.get("require-ca")):
            try:
                _ca(ctx, state)
            except CAError as exc:
                raise SignError(f"sign-curve-verify: ca: {exc.text}") from exc

    def verify(self, ctx: Context, header: KV, data: bytes, signature: bytes) -> None:
        state = _state(ctx)
        now = int(time.time())
        try:
            cert: Cert | None = Cert.from_kv(header.split(_CERT_PREFIX))
        except CertError:
            cert = None
        xtime = header.get_time("curve.xtime")
        ctime = header.get_time("curve.ctime")
        userid = header.get_int("userid")
        if cert is None or xtime is None or ctime is None or userid is None:
            raise SignError("sign-curve-verify: incomplete header")
        if not cert.verify_detached(signature, data):
            raise SignError("sign-curve-verify: verification failure")
        if cf.as_bool(state.config.get("require-ca")):
            _verify_by_ca(ctx, state, cert, userid, ctime, now)
        else:
            _verify_by_home(cert, userid)
        if xtime < now or ctime + state.max_ttl < now:
            raise SignError("sign-curve-verify: xtime or max-ttl exceeded")
        if ctime > now:
            raise SignError("sign-curve-verify: ctime is in the future")


def _verify_by_home(cert: Cert, userid: int) -> None:
    # The cert authenticates userid if it is the one in userid's home.
    user = _user(userid)
    path = None if user is None else _home_cert_of(user)
    home_cert = None
    if user is not None and path is not None:
        try:  # noqa: SIM105 - contextlib costs the verifiers start-up time
            home_cert = _load_home_cert(user, path)
        except CertError:
            pass
    if home_cert is None:
        where = path or "unknown user"
        raise SignError(f"sign-curve-verify: error loading cert from {where}")
    if home_cert != cert:
        raise SignError("sign-curve-verify: cert verification failed")


def _load_home_cert(user: pwd.struct_passwd, path: str) -> Cert:
    """The cert in ``user``'s home, as ``user`` can read it (not upstream,
    which reads it with the verifier's identity, root's in the IMP).

    A verifier running as root (the IMP's privileged half) forks a reader
    that becomes ``user`` for good, reads and parses the file, and sends
    back the parsed cert: the file is reached, opened and parsed with only
    the rights of the user who controls it.  Any other verifier reads it
    with its own identity (it cannot switch), as upstream does.
    """
    euid = posix.geteuid()
    if euid != 0 or user.pw_uid == euid:
        return Cert.load_untrusted(path)
    return Cert.decode(_output_as(user, lambda: Cert.load_untrusted(path).encode()))


def _output_as(user: pwd.struct_passwd, produce: Callable[[], bytes]) -> bytes:
    """``produce()`` run in a child that has become ``user`` for good; CertError
    with the child's errno if it fails, EIO if it dies."""
    from ..imp import creds  # the one module that switches ids (it never returns on failure)

    rfd, wfd = posix.pipe2(posix.O_CLOEXEC)
    pid = posix.fork()
    if pid == 0:  # the reader: never return into the verifier's code
        code = 0
        try:
            posix.close(rfd)
            creds.become_user(user)
            data = memoryview(produce())
            while data:
                data = data[posix.write(wfd, data) :]
        except CertError as exc:
            code = exc.errno if 0 < exc.errno < 256 else errno.EIO
        except BaseException:  # anything else (a failed switch: ImpError)
            code = errno.EIO
        finally:
            posix._exit(code)
    posix.close(wfd)
    chunks, size = [], 0
    try:
        while size <= READ_LIMIT and (chunk := posix.read(rfd, 1 << 16)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        posix.close(rfd)
    _, status = posix.waitpid(pid, 0)
    code = posix.waitstatus_to_exitcode(status)
    if code != 0:
        raise CertError(code if code > 0 else errno.EIO)
    if size > READ_LIMIT:
        raise CertError(errno.EINVAL)
    return b"".join(chunks)


def _verify_by_ca(
    ctx: Context, state: _State, cert: Cert, userid: int, ctime: int, now: int
) -> None:
    # The cert authenticates userid if the CA signed it for userid.
    try:
        _ca(ctx, state).authenticate(cert, userid, ctime, now)
    except CAError as exc:
        raise SignError(f"sign-curve-verify: ca: {exc.text}") from exc


def _ca(ctx: Context, state: _State) -> CA:
    """The CA's public half, loaded on first use (CAError, SignError)."""
    if state.ca is None:
        try:
            table = ctx.get_config("ca")
        except SignError as exc:
            raise SignError("sign-curve-verify: [ca] config missing") from exc
        ca = CA(table)
        ca.load(secret=False)
        state.ca = ca
    return state.ca


MECH = CurveMech()
