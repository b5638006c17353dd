"""The certificate authority of the curve mechanism (upstream libca/ca.c).

The CA signs user certs after setting the metadata that binds them to a
userid and a validity period, and verifies them for the curve verifier.
Revocation is a file named after the cert's uuid in ``revoke-dir``.
Every failure raises CAError with upstream's message text.
"""

from __future__ import annotations

import errno
import posix
import time

from .. import conf as cf
from ..fs import fsencode, lexists
from .cert import Cert, CertError, c_string
from .errors import SignError

# Annotations only: typing costs the curve verifiers (both halves of the
# IMP) start-up time; so would uuid, imported where a cert is signed.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from typing import Any

_OPTS = (
    cf.Option("max-cert-ttl", "int64", True),
    cf.Option("max-sign-ttl", "int64", True),
    cf.Option("cert-path", "string", True),
    cf.Option("revoke-dir", "string", True),
    cf.Option("revoke-allow", "bool", True),
    cf.Option("domain", "string", True),
)
_PATH_MAX = 4096
_EINVAL = posix.strerror(errno.EINVAL)


class CAError(SignError):
    """A CA operation failed; ``text`` is upstream's ca_error_t message."""


def _revoke_path(directory: str, cert_uuid: str) -> str:
    path = f"{directory}/{cert_uuid}"
    if len(fsencode(path)) > _PATH_MAX:
        raise CAError(_EINVAL)
    return path


def _is_revoked(path: str) -> bool:
    """Revoked unless ``path`` is known not to exist: any entry there (a
    dangling symlink too) revokes, and so does any error but ENOENT.

    Upstream's access(F_OK) checks with the real uid, which in the IMP's
    privileged half is the caller's: a revoke-dir that the caller cannot
    search made every revoked cert valid.  lstat uses the effective ids.
    One exception: a verifier without privilege that may not look (EACCES
    in a 0700 revoke-dir) cannot know, as upstream.  It is not the one that
    decides: the IMP's privileged half verifies J again, as root.
    """
    try:
        posix.lstat(path)
    except FileNotFoundError:
        return False
    except PermissionError:
        return posix.geteuid() == 0  # root denied (e.g. NFS root squash): revoked
    except OSError:
        return True  # ENOTDIR, ELOOP, EIO, ...: cannot prove it is not revoked
    return True


class CA:
    """A CA configured from a ``[ca]`` table (upstream ca_create)."""

    def __init__(self, table: object) -> None:
        try:
            cf.check(table, _OPTS, strict=True, anytab=False)
        except cf.ConfigError as exc:
            raise CAError(exc.text) from exc
        assert isinstance(table, dict)  # check() refuses anything else
        self._table: dict[str, Any] = dict(table)
        self.cert: Cert | None = None

    def _str(self, key: str) -> str:
        return c_string(cf.as_str(self._table.get(key)))

    def _int(self, key: str) -> int:
        return cf.as_int(self._table.get(key))

    @property
    def cert_path(self) -> str:
        return self._str("cert-path")

    # -- the CA's own cert -------------------------------------------------
    def load(self, secret: bool = False) -> None:
        """Load the CA cert from ``cert-path`` (with its secret key if asked)."""
        path = self.cert_path
        if posix.geteuid() == 0:  # not upstream: root trusts only files only root can change
            from ..conf.pathcheck import PathError, path_is_secure

            for name in (path + ".pub", path) if secret else (path + ".pub",):
                try:
                    # A missing file is left to Cert.load, for upstream's message.
                    if lexists(name):
                        path_is_secure(name)
                except PathError as exc:
                    raise CAError(f"{name}: {exc.text}") from None
        try:
            self.cert = Cert.load(path, secret)
        except CertError as exc:
            raise CAError(f"{path}: {exc.text}") from exc

    def store(self) -> None:
        path = self.cert_path
        if self.cert is None:
            raise CAError("CA cert was not initialized")
        if not self.cert.has_secret:
            raise CAError("CA cert does not contain secret key")
        try:
            self.cert.store(path)
        except CertError as exc:
            raise CAError(f"{path}: {exc.text}") from exc

    def keygen(self, not_valid_before: int = 0, ttl: int = 0) -> None:
        """Replace the CA cert with a new self-signed one (ca-capability true)."""
        if ttl < 0 or not_valid_before < 0:
            raise CAError(_EINVAL)
        cert = Cert.create()
        self._sign_with(cert, cert, not_valid_before, ttl, posix.getuid(), True)
        self.cert = cert

    def set_cert(self, cert: Cert) -> None:
        self.cert = cert.copy()

    # -- signing -------------------------------------------------------------
    def sign(self, cert: Cert, ttl: int, userid: int, not_valid_before: int = 0) -> None:
        """Bind ``cert`` to ``userid`` and sign it; ttl 0 means max-cert-ttl."""
        if ttl < 0 or not_valid_before < 0 or userid < 0:
            raise CAError(_EINVAL)
        if self.cert is None:
            raise CAError("CA cert has not been loaded/generated")
        if not self.cert.has_secret:
            raise CAError("CA cert does not contain secret key")
        self._sign_with(self.cert, cert, not_valid_before, ttl, userid, False)

    def _sign_with(
        self,
        ca_cert: Cert,
        cert: Cert,
        not_valid_before: int,
        ttl: int,
        userid: int,
        ca_capability: bool,
    ) -> None:
        max_cert_ttl = self._int("max-cert-ttl")
        if ttl > max_cert_ttl:
            raise CAError(f"ttl must be <= {max_cert_ttl}")
        if ttl == 0:
            ttl = max_cert_ttl
        now = int(time.time())
        if not_valid_before == 0:
            not_valid_before = now
        import uuid  # signing only

        cert_uuid = str(uuid.uuid4())
        try:
            # Each put moves the key to the end: this order is the cert's.
            cert.meta_set("uuid", cert_uuid)
            cert.meta_set("not-valid-before-time", not_valid_before, "t")
            cert.meta_set("ctime", now, "t")
            cert.meta_set("xtime", not_valid_before + ttl, "t")
            cert.meta_set("userid", userid, "i")
            cert.meta_set("max-sign-ttl", self._int("max-sign-ttl"), "i")
            issuer = cert_uuid if ca_cert is cert else ca_cert.meta.get_str("uuid")
            if issuer is None:
                raise CertError(errno.ENOENT)
            cert.meta_set("issuer", issuer)
            cert.meta_set("domain", self._str("domain"))
            cert.meta_set("ca-capability", ca_capability)
            ca_cert.sign_cert(cert)
        except CertError as exc:
            raise CAError(exc.text) from exc

    # -- verification ------------------------------------------------------------
    def verify(self, cert: Cert) -> tuple[int, int]:
        """Check ``cert`` was issued by this CA and is valid now.

        Returns the cert's (userid, max-sign-ttl).
        """
        if self.cert is None:
            raise CAError("CA cert has not been loaded/generated")
        if not self.cert.meta.get_bool("ca-capability"):
            raise CAError("ca certificate lacks ca-capability")
        now = int(time.time())
        if not self.cert.verify_cert(cert):
            raise CAError("signature verification failed")
        meta = cert.meta
        cert_uuid = meta.get_str("uuid")
        not_valid_before = meta.get_time("not-valid-before-time")
        ctime = meta.get_time("ctime")
        xtime = meta.get_time("xtime")
        userid = meta.get_int("userid")
        max_sign_ttl = meta.get_int("max-sign-ttl")
        if (
            cert_uuid is None
            or not_valid_before is None
            or ctime is None
            or xtime is None
            or userid is None
            or max_sign_ttl is None
        ):
            raise CAError("required metadata is missing from cert")
        if xtime < now:
            raise CAError("cert has expired")
        if not_valid_before > now:
            raise CAError("cert is not yet valid")
        if _is_revoked(_revoke_path(self._str("revoke-dir"), cert_uuid)):
            raise CAError("cert has been revoked")
        return userid, max_sign_ttl

    def authenticate(self, cert: Cert, userid: int, ctime: int, now: int) -> None:
        """Check that ``cert`` may sign as ``userid`` a request made at ``ctime``."""
        cert_userid, max_sign_ttl = self.verify(cert)
        if cert_userid != userid:
            raise CAError("userid mismatch")
        if ctime + max_sign_ttl < now:
            raise CAError("max-sign-ttl exceeded")

    def revoke(self, cert_uuid: str) -> None:
        """Revoke the cert ``cert_uuid`` by creating ``revoke-dir/<uuid>``."""
        if not cert_uuid:
            raise CAError(_EINVAL)
        if not cf.as_bool(self._table.get("revoke-allow")):
            raise CAError("revocation not permitted on this node")
        directory = self._str("revoke-dir")
        try:
            posix.mkdir(directory, 0o755)
        except FileExistsError:
            pass
        except OSError as exc:
            raise CAError(posix.strerror(exc.errno or errno.EIO)) from exc
        path = _revoke_path(directory, cert_uuid)
        try:
            posix.close(posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_CLOEXEC, 0o644))
        except OSError as exc:
            raise CAError(f"{path}: {posix.strerror(exc.errno or errno.EIO)}") from exc
