"""Curve signing certificates, file- and wire-compatible with upstream sigcert.

A cert is ordered metadata (a kv object), an Ed25519 public key, optionally
the libsodium 64-byte secret key (seed followed by public key) and optionally
a CA signature.  On disk a cert NAME is two TOML files: ``NAME.pub`` (the
public part) and ``NAME`` (the secret key).  Metadata order matters: it feeds
the CA signature and cert equality, so it is kept exactly as read.

Failures raise CertError carrying an errno; its text is strerror(errno),
which is what upstream callers print.
"""

from __future__ import annotations

import errno
import posix
from _stat import S_ISLNK, S_ISREG

from ..fs import fsencode
from . import b64, certtoml, sodium
from .errors import SignError
from .kv import KV, KVError, parse_double, parse_int64
from .sodium import PUBLIC_KEY_BYTES, SECRET_KEY_BYTES, SIGNATURE_BYTES

# Annotations only: typing costs both halves of the IMP start-up time.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from typing import IO, Any, Union

    MetaValue = Union[str, int, float, bool]

# Upstream refuses cert files larger than this (its TOML parser's offsets
# are ints); stdin in casign is read under the same limit.
READ_LIMIT = 10 * 1024 * 1024
_PATH_MAX = 4096

_KINDS = {str: "s", bool: "b", int: "i", float: "d"}


class CertError(SignError):
    """A cert operation failed with ``errno``; ``text`` is its strerror.

    ``filename`` is the file it concerns, when one of several may."""

    def __init__(self, err: int, filename: str | None = None) -> None:
        self.errno = err
        self.filename = filename
        super().__init__(posix.strerror(err))


def c_string(text: str) -> str:
    """What C sees of a string: everything before the first NUL."""
    return text.split("\0", 1)[0]


def _check_path(name: str) -> str:
    # Upstream builds "NAME.pub" in a PATH_MAX+1 buffer and fails on overflow.
    name = c_string(name)
    try:
        too_long = len(fsencode(name + ".pub")) > _PATH_MAX
    except UnicodeEncodeError as exc:
        raise CertError(errno.EINVAL) from exc
    if too_long:
        raise CertError(errno.EINVAL)
    return name


class Cert:
    """One certificate; see the module docstring."""

    def __init__(
        self,
        meta: KV,
        public_key: bytes,
        secret_key: bytes | None = None,
        signature: bytes | None = None,
    ) -> None:
        self.meta = meta
        self.public_key = public_key
        self.secret_key = secret_key
        self.signature = signature

    # -- creation and copies ---------------------------------------------
    @classmethod
    def create(cls) -> Cert:
        """A fresh key pair with metadata ``algorithm = "ed25519"``."""
        public, secret = sodium.keypair()
        cert = cls(KV(), public, secret)
        cert.meta_set("algorithm", "ed25519")
        return cert

    def copy(self) -> Cert:
        return Cert(self.meta.copy(), self.public_key, self.secret_key, self.signature)

    @property
    def has_secret(self) -> bool:
        return self.secret_key is not None

    def forget_secret(self) -> None:
        self.secret_key = None

    def __eq__(self, other: object) -> bool:
        # As sigcert_equal: metadata bytes, public key, and the secret key
        # if either side has one.  The CA signature is not compared.
        return (
            isinstance(other, Cert)
            and self.meta == other.meta
            and self.public_key == other.public_key
            and self.secret_key == other.secret_key
        )

    # -- metadata ------------------------------------------------------------
    def meta_set(self, key: str, value: MetaValue, typ: str | None = None) -> None:
        """Set ``key``; ``typ`` "t" stores an int as a timestamp.

        Without ``typ`` the kv type follows the Python type.  Keys may not
        contain ``.`` (it would read back as TOML hierarchy).
        """
        if "." in key:
            raise CertError(errno.EINVAL)
        kind = typ or _KINDS.get(type(value))
        meta = self.meta
        try:
            if kind == "s" and isinstance(value, str):
                meta.put_str(key, value)
            elif kind == "b" and isinstance(value, bool):
                meta.put_bool(key, value)
            elif kind == "d" and isinstance(value, float):
                meta.put_double(key, value)
            elif kind in ("i", "t") and isinstance(value, int) and not isinstance(value, bool):
                (meta.put_int if kind == "i" else meta.put_time)(key, value)
            else:
                raise CertError(errno.EINVAL)
        except KVError as exc:
            raise CertError(errno.EINVAL) from exc

    def meta_get(self, key: str, typ: str) -> MetaValue | None:
        """The value of ``key`` as type ``typ`` ("s", "i", "d", "b", "t").

        None if missing or of another type, as upstream's ENOENT.
        """
        if "." in key:
            raise CertError(errno.EINVAL)
        getters = {
            "s": self.meta.get_str,
            "i": self.meta.get_int,
            "d": self.meta.get_double,
            "b": self.meta.get_bool,
            "t": self.meta.get_time,
        }
        getter = getters.get(typ)
        if getter is None:
            raise CertError(errno.EINVAL)
        value: MetaValue | None = getter(key)
        return value

    # -- signatures ----------------------------------------------------------
    def sign_detached(self, data: bytes) -> str:
        """Base64 Ed25519 signature over ``data`` (needs the secret key)."""
        if self.secret_key is None:
            raise CertError(errno.EINVAL)
        return b64.encode(sodium.sign_detached(data, self.secret_key))

    def verify_detached(self, signature: str | bytes, data: bytes) -> bool:
        """True if ``signature`` (base64, 64 bytes) signs ``data``."""
        try:
            sig = b64.decode_sized(signature, SIGNATURE_BYTES)
        except ValueError:
            return False
        return sodium.verify_detached(sig, data, self.public_key)

    def _ca_signed_bytes(self) -> bytes:
        # What a CA signs: the public key (note the underscore in the key
        # name, unlike the header's "curve.public-key") then the metadata.
        kv = KV()
        kv.put_str("curve.public_key", b64.encode(self.public_key))
        kv.join(self.meta, "meta.")
        return kv.encode()

    def sign_cert(self, cert: Cert) -> None:
        """Sign ``cert`` with this (CA) cert's secret key; store it in ``cert``."""
        if self.secret_key is None:
            raise CertError(errno.EINVAL)
        cert.signature = sodium.sign_detached(cert._ca_signed_bytes(), self.secret_key)

    def verify_cert(self, cert: Cert) -> bool:
        """True if ``cert`` carries a valid signature by this (CA) cert."""
        if cert.signature is None:
            return False
        return sodium.verify_detached(cert.signature, cert._ca_signed_bytes(), self.public_key)

    # -- kv form (embedded in a J header, sent over privsep) -----------------
    def to_kv(self) -> KV:
        kv = KV()
        kv.join(self.meta, "meta.")
        kv.put_str("curve.public-key", b64.encode(self.public_key))
        if self.signature is not None:
            kv.put_str("curve.signature", b64.encode(self.signature))
        return kv

    def encode(self) -> bytes:
        return self.to_kv().encode()

    @classmethod
    def from_kv(cls, kv: KV) -> Cert:
        """Rebuild a public cert; other keys are ignored."""
        if len(kv) == 0:
            raise CertError(errno.EINVAL)
        pub = kv.get_str("curve.public-key")
        if pub is None:
            raise CertError(errno.ENOENT)
        public_key = _decode_key(pub, PUBLIC_KEY_BYTES)
        # A signature entry of another type reads as absent (ENOENT upstream).
        sig = kv.get_str("curve.signature")
        signature = None if sig is None else _decode_key(sig, SIGNATURE_BYTES)
        return cls(kv.split("meta."), public_key, None, signature)

    @classmethod
    def decode(cls, buf: bytes) -> Cert:
        try:
            kv = KV.decode(buf)
        except KVError as exc:
            raise CertError(errno.EINVAL) from exc
        return cls.from_kv(kv)

    # -- TOML form -------------------------------------------------------------
    @classmethod
    def loads(cls, data: str | bytes) -> Cert:
        """Parse the public cert TOML text (the ``NAME.pub`` file)."""
        doc = _parse_toml(data)
        meta_table = doc.get("metadata")
        curve = doc.get("curve")
        if not isinstance(meta_table, dict):
            raise CertError(errno.EINVAL)
        cert = cls(KV(), b"")
        for key, value in meta_table.items():
            _set_toml_meta(cert, key, value)
        if not isinstance(curve, dict):
            raise CertError(errno.EINVAL)
        cert.public_key = _toml_key(curve.get("public-key"), PUBLIC_KEY_BYTES)
        # Arrays and tables are not "values" to upstream's reader: absent.
        sig = curve.get("signature")
        if sig is not None and not isinstance(sig, (list, dict)):
            cert.signature = _toml_key(sig, SIGNATURE_BYTES)
        return cert

    @classmethod
    def read(cls, stream: IO[bytes]) -> Cert:
        """Read a public cert from a binary stream."""
        return cls.loads(_read_limited(stream))

    @classmethod
    def load_untrusted(cls, name: str) -> Cert:
        """Load ``name.pub`` from a directory that another user controls:
        the file itself (never a symlink) and only a regular file (opening a
        FIFO would block, a device could be anything).  Open it with that
        user's identity: this does not switch ids."""
        path = _check_path(name) + ".pub"
        flags = (posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_NOCTTY
                 | posix.O_CLOEXEC)
        try:
            fd = posix.open(path, flags)
        except OSError as exc:
            raise CertError(exc.errno or errno.EIO) from exc
        try:
            regular = S_ISREG(posix.fstat(fd).st_mode)
        except OSError as exc:
            regular, err = False, exc.errno or errno.EIO
        else:
            err = errno.EINVAL
        if not regular:
            posix.close(fd)
            raise CertError(err)
        with open(fd, "rb") as fp:
            return cls.read(fp)

    def dumps(self) -> str:
        """The public cert in upstream's TOML layout (strings not escaped)."""
        lines = ["[metadata]\n"]
        for key, typ, raw in self.meta.items():
            text = raw.decode("utf-8", "surrogateescape")
            if typ == "s":
                text = f'"{text}"'
            elif typ == "i":
                # Unparseable numbers print as 0, as upstream's kv_val_*().
                text = str(parse_int64(raw) or 0)
            elif typ == "d":
                num = parse_double(raw)
                text = "%f" % (0.0 if num is None else num)
            lines.append(f"    {key} = {text}\n")
        lines.append("\n[curve]\n")
        lines.append(f'    public-key = "{b64.encode(self.public_key)}"\n')
        if self.signature is not None:
            lines.append(f'    signature = "{b64.encode(self.signature)}"\n')
        return "".join(lines)

    # -- files -----------------------------------------------------------------
    @classmethod
    def load(cls, name: str, secret: bool = False) -> Cert:
        """Load ``name.pub``, and the secret key from ``name`` if asked."""
        name = _check_path(name)
        with _open_read(name + ".pub") as fp:
            cert = cls.read(fp)
        if secret:
            with _open_read(name) as fp:
                doc = _parse_toml(_read_limited(fp))
            curve = doc.get("curve")
            if not isinstance(curve, dict):
                raise CertError(errno.EINVAL)
            cert.secret_key = _toml_key(curve.get("secret-key"), SECRET_KEY_BYTES)
        return cert

    def store(self, name: str) -> None:
        """Write ``name.pub`` (0644) and, with a secret key, ``name`` (0600).

        Existing files are truncated and keep their mode, as upstream.
        """
        if not name:
            raise CertError(errno.EINVAL)
        name = _check_path(name)
        _write(name + ".pub", 0o644, self.dumps())
        if self.secret_key is not None:
            _write(name, 0o600, self._secret_toml())

    def store_new(self, name: str, replace: bool = False) -> None:
        """Write the pair as ``store`` does, but as new files: exactly 0600
        and 0644 whatever umask or existing files say, never through a
        symlink, refusing existing files (EEXIST) unless ``replace``, and
        each complete or not at all (a temp file renamed or linked into
        place).  A symlink at either name is refused (ELOOP) even then."""
        if not name or self.secret_key is None:
            raise CertError(errno.EINVAL)
        name = _check_path(name)
        files = ((name, 0o600, self._secret_toml()), (name + ".pub", 0o644, self.dumps()))
        for path, _, _ in files:  # refuse before writing anything
            _check_new(path, replace)
        for path, mode, text in files:
            _install(path, mode, text.encode("utf-8", "surrogateescape"), replace)

    def _secret_toml(self) -> str:
        assert self.secret_key is not None
        return f'[curve]\n    secret-key = "{b64.encode(self.secret_key)}"\n'


# -- helpers -------------------------------------------------------------------
def _decode_key(text: str, size: int) -> bytes:
    try:
        return b64.decode_sized(text, size)
    except ValueError as exc:
        raise CertError(errno.EINVAL) from exc


def _toml_key(value: object, size: int) -> bytes:
    if not isinstance(value, str):
        raise CertError(errno.EINVAL)
    return _decode_key(c_string(value), size)


def _open_read(path: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise CertError(exc.errno or errno.EIO) from exc


def _read_limited(stream: IO[bytes]) -> bytes:
    try:
        data = stream.read(READ_LIMIT + 1)
    except OSError as exc:
        raise CertError(exc.errno or errno.EIO) from exc
    if len(data) > READ_LIMIT:
        raise CertError(errno.EINVAL)
    return data


def _parse_toml(data: str | bytes) -> dict[str, Any]:
    try:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if len(data) > READ_LIMIT:
            raise CertError(errno.EINVAL)
        # Upstream parses a C string: anything after a NUL is not seen.  It
        # does not validate UTF-8 either, so stray bytes pass through strings.
        text = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        doc = certtoml.loads(text)
    except (ValueError, RecursionError) as exc:  # incl. TOMLDecodeError
        raise CertError(errno.EINVAL) from exc
    return doc


def _set_toml_meta(cert: Cert, key: str, value: object) -> None:
    # Upstream tries string, bool, int, double, then datetime; a decimal
    # integer too large for int64 therefore becomes a double.
    key = c_string(key)
    if isinstance(value, str):
        cert.meta_set(key, c_string(value))
    elif isinstance(value, bool):
        cert.meta_set(key, value)
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            cert.meta_set(key, value)
        else:
            try:
                cert.meta_set(key, float(value))
            except OverflowError as exc:
                raise CertError(errno.EINVAL) from exc
    elif isinstance(value, float):
        cert.meta_set(key, value)
    else:
        # A date-time, read as UTC wall-clock fields (zone and fraction are
        # ignored); not a date or time alone, arrays, sub-tables.
        t = certtoml.seconds(value)
        if t is None or t < 0:
            raise CertError(errno.EINVAL)
        cert.meta_set(key, t, "t")


def _check_new(path: str, replace: bool) -> None:
    """``path`` may be written by store_new: absent, or a non-symlink if ``replace``."""
    try:
        found = posix.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CertError(exc.errno or errno.EIO, path) from exc
    if S_ISLNK(found.st_mode):
        raise CertError(errno.ELOOP, path)
    if not replace:
        raise CertError(errno.EEXIST, path)


def _install(path: str, mode: int, data: bytes, replace: bool) -> None:
    """Write ``data`` to a fresh temp file beside ``path``, then rename it
    over ``path`` (``replace``) or link it there (fails if anything is)."""
    import secrets  # keygen only

    directory, _, base = path.rpartition("/")
    temp = f"{directory}{'/' if directory else ''}.{base}.{secrets.token_hex(8)}.tmp"
    flags = posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC
    try:
        fd = posix.open(temp, flags, 0o600)
    except OSError as exc:
        raise CertError(exc.errno or errno.EIO, path) from exc
    try:
        with open(fd, "wb") as fp:
            posix.fchmod(fd, mode)  # exactly, whatever the umask
            fp.write(data)
            fp.flush()
            posix.fsync(fd)
        if replace:
            posix.rename(temp, path)  # replaces what is there, never follows a symlink
        else:
            posix.link(temp, path, follow_symlinks=False)  # EEXIST if anything is there
    except OSError as exc:
        raise CertError(exc.errno or errno.EIO, path) from exc
    finally:
        try:  # noqa: SIM105 - contextlib costs the verifiers start-up time
            posix.unlink(temp)  # gone already if renamed
        except FileNotFoundError:
            pass


def _write(path: str, mode: int, text: str) -> None:
    data = text.encode("utf-8", "surrogateescape")
    try:
        flags = posix.O_WRONLY | posix.O_TRUNC | posix.O_CREAT | posix.O_CLOEXEC
        fd = posix.open(path, flags, mode)
        with open(fd, "wb") as fp:
            fp.write(data)
    except OSError as exc:
        raise CertError(exc.errno or errno.EIO) from exc
