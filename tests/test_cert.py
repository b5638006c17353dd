"""Curve certificates: metadata, TOML files, kv form, signatures (upstream sigcert)."""

from __future__ import annotations

import calendar
import errno
import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flux_imp.conf.tomltk import _GiveUp
from flux_imp.sign import b64, certtoml, timestamp
from flux_imp.sign.cert import READ_LIMIT, Cert, CertError
from flux_imp.sign.kv import KV

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
GOOD_PUB = '[metadata]\n[curve]\n    public-key = "/Q5g8sj5Hl4XUF9GKn4mNjnwbC/0gTYAG2d9yReTJwc="\n'
GOOD_SECRET = (
    "[curve]\n"
    '    secret-key = "j+UF7qPPkehuwBz/DZjW4NE4lKcdXG+eM+828J30UwOr3vgDNB1IA+C/fa'
    'uW2XnPdGVv730JGig3lAiRRYzqVA=="\n'
)
PK_LINE = 'public-key = "/Q5g8sj5Hl4XUF9GKn4mNjnwbC/0gTYAG2d9yReTJwc="\n'


def vector(name: str) -> bytes:
    path = VECTORS / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path.read_bytes()


def meta_doc(meta: str, curve: str = PK_LINE) -> str:
    return f"[metadata]\n{meta}\n[curve]\n{curve}"


def errno_of(func: object, *args: object) -> int:
    with pytest.raises(CertError) as info:
        func(*args)  # type: ignore[operator]
    assert info.value.text == os.strerror(info.value.errno)
    return info.value.errno


@pytest.fixture
def umask022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


# -- creation and metadata ---------------------------------------------------
def test_create_sets_algorithm_ed25519() -> None:
    cert = Cert.create()
    assert cert.meta_get("algorithm", "s") == "ed25519"
    assert cert.meta.keys() == ["algorithm"]
    assert cert.has_secret and len(cert.public_key) == 32
    assert cert.secret_key is not None and cert.secret_key[32:] == cert.public_key


def test_two_created_certs_differ() -> None:
    assert Cert.create() != Cert.create()


def test_meta_set_get_each_type() -> None:
    cert = Cert.create()
    cert.meta_set("foo", "bar")
    cert.meta_set("baz", 42)
    cert.meta_set("pi", 3.14159)
    cert.meta_set("flag", True)
    cert.meta_set("ts", 1692370785, "t")
    assert cert.meta_get("foo", "s") == "bar"
    assert cert.meta_get("baz", "i") == 42
    assert cert.meta_get("pi", "d") == 3.14159
    assert cert.meta_get("flag", "b") is True
    assert cert.meta_get("ts", "t") == 1692370785
    assert cert.meta.find("ts") == ("t", b"2023-08-18T14:59:45Z")


def test_meta_get_of_other_type_is_missing() -> None:
    cert = Cert.create()
    cert.meta_set("i", 1)
    for typ in "sdbt":
        assert cert.meta_get("i", typ) is None


@pytest.mark.parametrize("key", ["a.b", "."])
def test_meta_key_with_dot_is_einval(key: str) -> None:
    cert = Cert.create()
    assert errno_of(cert.meta_set, key, "x") == errno.EINVAL
    assert errno_of(cert.meta_get, key, "s") == errno.EINVAL


def test_meta_negative_timestamp_is_einval() -> None:
    assert errno_of(Cert.create().meta_set, "a", -1, "t") == errno.EINVAL


def test_meta_value_not_matching_type_is_einval() -> None:
    assert errno_of(Cert.create().meta_set, "a", "x", "i") == errno.EINVAL


def test_equality_ignores_signature_but_not_secret() -> None:
    cert = Cert.create()
    other = cert.copy()
    other.signature = bytes(64)
    assert cert == other
    other.forget_secret()
    assert cert != other
    cert.forget_secret()
    assert cert == other
    other.meta_set("x", 1)
    assert cert != other


# -- TOML files --------------------------------------------------------------
@pytest.mark.parametrize("name", ["u.pub", "ca.pub"])
def test_vector_cert_rewrites_byte_for_byte(name: str, tmp_path: Path) -> None:
    raw = vector(name)
    cert = Cert.loads(raw)
    assert cert.dumps().encode() == raw
    cert.store(str(tmp_path / "c"))
    assert (tmp_path / "c.pub").read_bytes() == raw
    assert not (tmp_path / "c").exists()


def test_vector_ca_verifies_vector_user_cert() -> None:
    ca = Cert.loads(vector("ca.pub"))
    user = Cert.loads(vector("u.pub"))
    assert ca.verify_cert(user) and ca.verify_cert(ca)
    assert not user.verify_cert(user)


def test_store_load_round_trip(tmp_path: Path) -> None:
    cert = Cert.create()
    cert.meta_set("foo", "bar")
    cert.meta_set("bar", -55)
    cert.meta_set("baz", 2.718)
    cert.meta_set("flag", False)
    cert.meta_set("time", 1700000000, "t")
    name = str(tmp_path / "test")
    cert.store(name)
    assert Cert.load(name, secret=True) == cert
    public = Cert.load(name)
    assert public != cert and not public.has_secret
    assert public.meta == cert.meta and public.public_key == cert.public_key


def test_store_text_format(tmp_path: Path) -> None:
    cert = Cert.create()
    cert.meta_set("i", -55)
    cert.meta_set("d", 2.718)
    cert.meta_set("b", False)
    cert.meta_set("t", 1692370785, "t")
    cert.signature = bytes(64)
    cert.store(str(tmp_path / "c"))
    pub = b64.encode(cert.public_key)
    assert (tmp_path / "c.pub").read_text() == (
        "[metadata]\n"
        '    algorithm = "ed25519"\n'
        "    i = -55\n"
        "    d = 2.718000\n"
        "    b = false\n"
        "    t = 2023-08-18T14:59:45Z\n"
        "\n"
        "[curve]\n"
        f'    public-key = "{pub}"\n'
        f'    signature = "{b64.encode(bytes(64))}"\n'
    )
    assert cert.secret_key is not None
    secret = b64.encode(cert.secret_key)
    assert (tmp_path / "c").read_text() == f'[curve]\n    secret-key = "{secret}"\n'


def test_store_writes_strings_unescaped() -> None:
    cert = Cert(KV(), bytes(32))
    cert.meta_set("q", 'say "hi" \\o/')
    assert '    q = "say "hi" \\o/"\n' in cert.dumps()


def test_store_prints_unparseable_numbers_as_zero() -> None:
    meta = KV()
    meta.put_raw("i", "i", b"junk")
    meta.put_raw("d", "d", b"junk")
    text = Cert(meta, bytes(32)).dumps()
    assert "    i = 0\n    d = 0.000000\n" in text


@pytest.mark.usefixtures("umask022")
def test_store_file_modes(tmp_path: Path) -> None:
    Cert.create().store(str(tmp_path / "c"))
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.pub").stat().st_mode) == 0o644


def test_store_over_existing_files_keeps_their_mode(tmp_path: Path) -> None:
    for name, mode in (("c", 0o640), ("c.pub", 0o600)):
        (tmp_path / name).write_text("x" * 4096)
        (tmp_path / name).chmod(mode)
    cert = Cert.create()
    cert.store(str(tmp_path / "c"))
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "c.pub").stat().st_mode) == 0o600
    assert Cert.load(str(tmp_path / "c"), secret=True) == cert


def test_store_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cert = Cert.create()
    cert.store("foo")
    assert Cert.load("foo", secret=True) == cert


def test_store_empty_name_is_einval() -> None:
    assert errno_of(Cert.create().store, "") == errno.EINVAL


def test_store_into_missing_dir_is_enoent(tmp_path: Path) -> None:
    assert errno_of(Cert.create().store, str(tmp_path / "no" / "c")) == errno.ENOENT


def test_load_missing_is_enoent(tmp_path: Path) -> None:
    assert errno_of(Cert.load, str(tmp_path / "noexist")) == errno.ENOENT


def test_load_missing_secret_is_enoent(tmp_path: Path) -> None:
    (tmp_path / "c.pub").write_text(GOOD_PUB)
    assert Cert.load(str(tmp_path / "c")).public_key
    assert errno_of(Cert.load, str(tmp_path / "c"), True) == errno.ENOENT


def test_upstream_good_cert_loads(tmp_path: Path) -> None:
    (tmp_path / "c.pub").write_text(GOOD_PUB)
    (tmp_path / "c").write_text(GOOD_SECRET)
    cert = Cert.load(str(tmp_path / "c"), secret=True)
    assert len(cert.meta) == 0 and cert.signature is None


SIG = "lemKu7wjG/KpLFaOPVt+axUvMzXRf/GoE7vQJDPH7iePXwKrDmOLZ3uQq4qQATOUHRuSDerdWyM6qokyKziiAg=="
BAD_PUBLIC = {
    "no public key": "[metadata]\n[curve]\n",
    "no metadata": f'[curve]\n{PK_LINE}signature = "{SIG}"\n',
    "no curve": "[metadata]\n",
    "invalid base64 key": meta_doc(
        "", 'public-key = "/Q5g8sj5Hl4XUF9GKn4m.jnwbC/0gTYAG2d9yReTJwc="\n'
    ),
    "short key": meta_doc("", 'public-key = "/Q5g8sj5Hl4XUF9GKn4mNjnwbC/0gTYAG2d9yReTJw=="\n'),
    "long key": meta_doc("", 'public-key = "/Q5g8sj5Hl4XUF9GKn4mNjnwbC/0gTYAG2d9yReTJwdh"\n'),
    "non-canonical key": meta_doc(
        "", 'public-key = "/Q5g8sj5Hl4XUF9GKn4mNjnwbC/0gTYAG2d9yReTJwd="\n'
    ),
    "key not a string": meta_doc("", "public-key = 5\n"),
    "invalid signature": meta_doc("", PK_LINE + f'signature = "{SIG[:20]}.{SIG[21:]}"\n'),
    "short signature": meta_doc("", PK_LINE + f'signature = "{SIG[:84]}"\n'),
    "long signature": meta_doc("", PK_LINE + f'signature = "{SIG[:86]}mE="\n'),
    "signature not a string": meta_doc("", PK_LINE + "signature = 5\n"),
    "metadata not a table": f"metadata = 1\n[curve]\n{PK_LINE}",
    "metadata array of tables": f"[[metadata]]\na = 1\n[curve]\n{PK_LINE}",
    "not TOML": "[metadata\n",
    "empty": "",
}


@pytest.mark.parametrize("text", BAD_PUBLIC.values(), ids=BAD_PUBLIC.keys())
def test_bad_public_cert_is_einval(text: str, tmp_path: Path) -> None:
    (tmp_path / "c.pub").write_text(text)
    assert errno_of(Cert.load, str(tmp_path / "c")) == errno.EINVAL


BAD_SECRET = {
    "no secret key": "[curve]\n",
    "no curve": "\n",
    "invalid base64": GOOD_SECRET.replace("eM+828", "eM+8.8"),
    "short": GOOD_SECRET.replace("RYzqVA==", ""),
    "long": GOOD_SECRET.replace("RYzqVA==", "RYzqVGE="),
    "not a string": "[curve]\nsecret-key = 1\n",
}


@pytest.mark.parametrize("text", BAD_SECRET.values(), ids=BAD_SECRET.keys())
def test_bad_secret_cert_is_einval(text: str, tmp_path: Path) -> None:
    (tmp_path / "c.pub").write_text(GOOD_PUB)
    (tmp_path / "c").write_text(text)
    assert errno_of(Cert.load, str(tmp_path / "c"), True) == errno.EINVAL


def test_signature_array_reads_as_absent() -> None:
    # Upstream's reader sees no value (only arrays/tables) under that key.
    assert Cert.loads(meta_doc("", PK_LINE + "signature = [1]\n")).signature is None


# Inference order: string, bool, int, double, datetime (read as UTC fields).
META_TYPES = {
    "string": ('a = "x"', "s", b"x"),
    "literal string": ("a = 'C:\\x'", "s", b"C:\\x"),
    "bool": ("a = true", "b", b"true"),
    "int": ("a = -55", "i", b"-55"),
    "int with underscores": ("a = 1_000", "i", b"1000"),
    "hex int": ("a = 0x1F", "i", b"31"),
    "int too large becomes double": (
        "a = 9223372036854775808",
        "d",
        b"9223372036854775808.000000",
    ),
    "double": ("a = 2.5e0", "d", b"2.500000"),
    "inf": ("a = -inf", "d", b"-inf"),
    "datetime": ("a = 2023-08-18T14:59:45Z", "t", b"2023-08-18T14:59:45Z"),
    "offset ignored": ("a = 2023-08-18T14:59:45+02:00", "t", b"2023-08-18T14:59:45Z"),
    "fraction ignored": ("a = 2023-08-18T14:59:45.999Z", "t", b"2023-08-18T14:59:45Z"),
    "local datetime": ("a = 2023-08-18 14:59:45", "t", b"2023-08-18T14:59:45Z"),
    "NUL escape truncates": ('a = "ab\\u0000cd"', "s", b"ab"),
}


@pytest.mark.parametrize("line,typ,raw", META_TYPES.values(), ids=META_TYPES.keys())
def test_metadata_type_inference(line: str, typ: str, raw: bytes) -> None:
    cert = Cert.loads(meta_doc(line + "\n"))
    assert cert.meta.find("a") == (typ, raw)


BAD_META = {
    "date only": "a = 2023-08-18",
    "time only": "a = 14:59:45",
    "before 1970": "a = 1969-12-31T23:59:59Z",
    "array": "a = [1, 2]",
    "inline table": "a = { b = 1 }",
    "dotted key": "a.b = 1",
    "quoted key with dot": '"a.b" = 1',
    "empty key": '"" = 1',
    "sub-table": "[metadata.sub]\nb = 2",
    "duplicate key": "a = 1\na = 2",
    "double too large": "a = 1" + "0" * 400,
}


@pytest.mark.parametrize("meta", BAD_META.values(), ids=BAD_META.keys())
def test_bad_metadata_is_einval(meta: str) -> None:
    assert errno_of(Cert.loads, meta_doc(meta + "\n")) == errno.EINVAL


def test_metadata_keeps_file_order() -> None:
    cert = Cert.loads(meta_doc("z = 1\na = 2\nm = 3\n"))
    assert cert.meta.keys() == ["z", "a", "m"]


def test_nul_in_key_truncates_it() -> None:
    cert = Cert.loads(meta_doc('"a\\u0000b" = 1\n'))
    assert cert.meta.keys() == ["a"]


def test_input_after_nul_is_ignored() -> None:
    cert = Cert.loads(meta_doc("a = 1\n").encode() + b"\0[[[ garbage")
    assert cert.meta.keys() == ["a"]


def test_invalid_utf8_inside_string_passes_through() -> None:
    cert = Cert.loads(b'[metadata]\na = "\xff"\n[curve]\n' + PK_LINE.encode())
    assert cert.meta.find("a") == ("s", b"\xff")
    assert cert.dumps().encode("utf-8", "surrogateescape").count(b'"\xff"') == 1


def test_size_limit_is_ten_mebibytes() -> None:
    text = meta_doc("").encode()
    padded = text + b"#" + b"x" * (READ_LIMIT - len(text) - 2) + b"\n"
    assert len(padded) == READ_LIMIT
    assert Cert.loads(padded).public_key
    assert errno_of(Cert.loads, padded + b"\n") == errno.EINVAL
    assert errno_of(Cert.read, io.BytesIO(padded + b"\n")) == errno.EINVAL


def test_read_from_stream() -> None:
    raw = vector("u.pub")
    assert Cert.read(io.BytesIO(raw)) == Cert.loads(raw)


@pytest.mark.parametrize("data", [b"", b"\0\0\0", b"garbage"])
def test_read_garbage_is_einval(data: bytes) -> None:
    assert errno_of(Cert.read, io.BytesIO(data)) == errno.EINVAL


# -- kv form --------------------------------------------------------------------
def test_encode_layout() -> None:
    cert = Cert.loads(vector("u.pub"))
    kv = KV.decode(cert.encode())
    keys = kv.keys()
    assert keys[: len(cert.meta)] == ["meta." + key for key, _, _ in cert.meta.items()]
    assert keys[len(cert.meta) :] == ["curve.public-key", "curve.signature"]


def test_encode_decode_round_trip() -> None:
    cert = Cert.create()
    cert.meta_set("foo", "bar")
    cert.meta_set("baz", 42e-27)
    cert.meta_set("time", 1700000000, "t")
    cert.forget_secret()
    back = Cert.decode(cert.encode())
    assert back == cert and back.signature is None
    signed = Cert.loads(vector("u.pub"))
    again = Cert.decode(signed.encode())
    assert again == signed and again.signature == signed.signature


def test_decode_empty_is_einval() -> None:
    assert errno_of(Cert.decode, b"") == errno.EINVAL
    assert errno_of(Cert.decode, b"\0") == errno.EINVAL


def test_decode_without_public_key_is_enoent() -> None:
    assert errno_of(Cert.decode, b"meta.a\0sb\0") == errno.ENOENT


def test_decode_bad_keys() -> None:
    kv = Cert.create().to_kv()
    kv.put_str("curve.signature", "AAAA")
    assert errno_of(Cert.from_kv, kv) == errno.EINVAL
    kv.put_int("curve.signature", 1)  # of another type: absent
    assert Cert.from_kv(kv).signature is None
    kv.put_str("curve.public-key", "AAAA")
    assert errno_of(Cert.from_kv, kv) == errno.EINVAL


# -- signatures -----------------------------------------------------------------
def test_sign_verify_detached() -> None:
    cert, other = Cert.create(), Cert.create()
    sig = cert.sign_detached(b"foo-bar-baz")
    assert len(sig) == 88
    assert cert.verify_detached(sig, b"foo-bar-baz")
    assert not other.verify_detached(sig, b"foo-bar-baz")
    assert not cert.verify_detached(sig, b"foo-KITTENS-baz")
    assert cert.verify_detached(cert.sign_detached(b""), b"")
    for bad in ("....", "", sig + "\n", sig[:-2]):
        assert not cert.verify_detached(bad, b"foo-bar-baz")


def test_sign_detached_is_plain_ed25519() -> None:
    public, secret = nacl.bindings.crypto_sign_seed_keypair(bytes(32))
    cert = Cert(KV(), public, secret)
    signed = nacl.bindings.crypto_sign(b"msg", secret)
    assert b64.decode(cert.sign_detached(b"msg")) == signed[:64]


def test_sign_without_secret_is_einval() -> None:
    cert = Cert.create()
    cert.forget_secret()
    assert errno_of(cert.sign_detached, b"x") == errno.EINVAL
    assert errno_of(cert.sign_cert, Cert.create()) == errno.EINVAL


def test_ca_signature_covers_public_key_with_underscore_then_meta() -> None:
    ca, cert = Cert.create(), Cert.create()
    cert.meta_set("username", "itsme")
    ca.sign_cert(cert)
    assert cert.signature is not None
    signed = (
        b"curve.public_key\0s" + b64.encode(cert.public_key).encode() + b"\0"
        b"meta.algorithm\0sed25519\0meta.username\0sitsme\0"
    )
    nacl.bindings.crypto_sign_open(cert.signature + signed, ca.public_key)


def test_sign_cert_verify_cert(tmp_path: Path) -> None:
    ca, cert = Cert.create(), Cert.create()
    cert.meta_set("username", "itsme")
    assert not ca.verify_cert(cert)
    ca.sign_cert(cert)
    assert ca.verify_cert(cert)
    assert ca.verify_cert(Cert.decode(cert.encode()))
    cert.store(str(tmp_path / "c"))
    assert ca.verify_cert(Cert.load(str(tmp_path / "c")))
    assert not Cert.create().verify_cert(cert)
    cert.meta_set("username", "noitsme")
    assert not ca.verify_cert(cert)


# -- property tests ----------------------------------------------------------------
TOML_BITS = st.sampled_from(
    [
        "[metadata]\n",
        "[curve]\n",
        PK_LINE,
        f'signature = "{SIG}"\n',
        "a = ",
        "b.c = ",
        '"x.y" = ',
        "1",
        "-2",
        "1e999",
        "9223372036854775808",
        "true",
        '"s"',
        "'l'",
        "2023-08-18T14:59:45Z",
        "2023-08-18",
        "12:00:00",
        "[1]",
        "{a=1}",
        "\n",
        "\0",
        "\\u0000",
        "[[metadata]]\n",
        "nan",
        "0x7f",
        " ",
        "#",
        "=",
        '"""',
        "\udcff",
    ]
)


def loaded_or_refused(
    load: Callable[[Any], Cert], data: Any, errnos: tuple[int, ...] = (errno.EINVAL,)
) -> Cert | None:
    """``load(data)``, or None if it raised a CertError with one of ``errnos``;
    any other exception or errno fails the test."""
    try:
        return load(data)
    except CertError as exc:
        assert exc.errno in errnos
        return None


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_loading_arbitrary_bytes_raises_only_cert_error(data: bytes) -> None:
    loaded_or_refused(Cert.loads, data)


@settings(max_examples=500)
@given(st.lists(TOML_BITS, max_size=30).map("".join))
def test_loading_toml_like_text_raises_only_cert_error(text: str) -> None:
    cert = loaded_or_refused(Cert.loads, text)
    if cert is not None:
        assert len(cert.public_key) == 32
        cert.dumps()


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_loading_arbitrary_text_raises_only_cert_error(text: str) -> None:
    loaded_or_refused(Cert.loads, text)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_decoding_arbitrary_kv_raises_only_cert_error(data: bytes) -> None:
    loaded_or_refused(Cert.decode, data, (errno.EINVAL, errno.ENOENT))


# -- untrusted files and new pairs (issue 9) -----------------------------------------


def untrusted_errno(name: Path) -> int:
    with pytest.raises(CertError) as info:
        Cert.load_untrusted(str(name))
    return info.value.errno


def test_load_untrusted_reads_a_regular_file(tmp_path: Path) -> None:
    cert = Cert.create()
    cert.store(str(tmp_path / "c"))
    assert Cert.load_untrusted(str(tmp_path / "c")) == Cert.loads(cert.dumps())


def test_load_untrusted_refuses_a_symlink(tmp_path: Path) -> None:
    Cert.create().store(str(tmp_path / "real"))
    (tmp_path / "c.pub").symlink_to(tmp_path / "real.pub")
    assert untrusted_errno(tmp_path / "c") == errno.ELOOP


def test_load_untrusted_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "c.pub")
    assert untrusted_errno(tmp_path / "c") == errno.EINVAL  # no writer: open would block


def test_load_untrusted_refuses_other_file_types(tmp_path: Path) -> None:
    (tmp_path / "d.pub").mkdir()
    assert untrusted_errno(tmp_path / "d") == errno.EINVAL
    os.mknod(tmp_path / "z.pub", 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # like /dev/zero
    assert untrusted_errno(tmp_path / "z") == errno.EINVAL
    assert untrusted_errno(tmp_path / "missing") == errno.ENOENT


def test_store_new_refuses_existing_files_unless_replace(tmp_path: Path) -> None:
    name = str(tmp_path / "c")
    cert = Cert.create()
    cert.store_new(name)
    with pytest.raises(CertError) as info:
        Cert.create().store_new(name)
    assert (info.value.errno, info.value.filename) == (errno.EEXIST, name)
    assert Cert.load(name, secret=True) == cert
    other = Cert.create()
    other.store_new(name, replace=True)
    assert Cert.load(name, secret=True) == other


def test_store_new_modes_are_exact(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        Cert.create().store_new(str(tmp_path / "c"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "c.pub").stat().st_mode) == 0o644


def test_store_new_needs_a_secret_key(tmp_path: Path) -> None:
    cert = Cert.create()
    cert.forget_secret()
    with pytest.raises(CertError) as info:
        cert.store_new(str(tmp_path / "c"))
    assert info.value.errno == errno.EINVAL
    assert list(tmp_path.iterdir()) == []


# -- cert TOML without tomllib (certtoml) ------------------------------------------


def _field(lo: int, hi: int, *edges: int) -> st.SearchStrategy[int]:
    return st.sampled_from(edges) | st.integers(lo, hi)


# Fields in and just out of range (Feb 29 of leap and other years, second 60).
STAMP = st.tuples(
    _field(0, 10000, 0, 1, 1900, 1969, 1970, 2000, 2023, 2100, 9999, 10000),
    _field(0, 13, 0, 1, 2, 12, 13), _field(0, 32, 0, 1, 28, 29, 30, 31, 32),
    _field(0, 24, 0, 23, 24), _field(0, 60, 0, 59, 60), _field(0, 61, 0, 59, 60, 61),
).map(lambda f: "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}Z".format(*f))  # fmt: skip
AFTER_STAMP = st.sampled_from(["", "\n", " ", " # c\n", "x", ".5", "+01:00", "Z", ",", "]"])


class _TomllibOnly(certtoml._CertParser):
    def document(self) -> dict[str, object]:
        raise _GiveUp


def loaded_with_tomllib(text: str) -> Cert | None:
    """Cert.loads(text) with certtoml's fast parser disabled, or None if refused."""
    saved = certtoml._CertParser
    certtoml._CertParser = _TomllibOnly  # type: ignore[misc]
    try:
        return loaded_or_refused(Cert.loads, text)
    finally:
        certtoml._CertParser = saved  # type: ignore[misc]


@settings(max_examples=1000)
@given(STAMP, AFTER_STAMP, st.booleans())
@example("2023-02-29T00:00:00Z", "", False)
@example("2024-02-29T00:00:00Z", "", False)
@example("1900-02-29T00:00:00Z", "", False)
@example("2000-02-29T00:00:00Z", "", False)
@example("2023-04-31T00:00:00Z", "", False)
@example("2023-06-30T00:00:00Z", "", False)
@example("2100-02-29T00:00:00Z", "", False)
def test_cert_timestamps_read_as_tomllib_reads_them(stamp: str, after: str, array: bool) -> None:
    value = f"[{stamp}{after}]" if array else f"{stamp}{after}"
    text = meta_doc(f'    a = "x"\n    t = {value}\n    n = 7\n')
    fast = loaded_or_refused(Cert.loads, text)
    slow = loaded_with_tomllib(text)
    assert (fast and fast.dumps()) == (slow and slow.dumps())


def test_cert_files_are_read_without_tomllib(tmp_path: Path, monkeypatch: Any) -> None:
    ca, cert = Cert.create(), Cert.create()
    cert.meta_set("ctime", 1_700_000_000, "t")
    cert.meta_set("userid", 42)
    cert.meta_set("ok", True)
    ca.sign_cert(cert)
    cert.store(str(tmp_path / "c"))
    monkeypatch.setitem(sys.modules, "tomllib", None)  # importing it raises ImportError
    monkeypatch.setitem(sys.modules, "tomli", None)
    assert Cert.load(str(tmp_path / "c"), secret=True) == cert
    assert ca.verify_cert(Cert.load(str(tmp_path / "c")))
    with pytest.raises(ImportError):
        Cert.loads(meta_doc("    t = 2023-08-18 14:59:45\n"))  # not in the subset


@settings(max_examples=2000)
@given(st.tuples(st.integers(1, 9999), st.integers(1, 12), st.integers(1, 31),
                 st.integers(0, 23), st.integers(0, 59), st.integers(0, 61)))  # fmt: skip
def test_epoch_is_timegm(fields: tuple[int, int, int, int, int, int]) -> None:
    assert timestamp.epoch(*fields) == calendar.timegm((*fields, 0, 0, 0))
