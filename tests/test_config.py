"""The cf layer: glob loading, paranoia, tomltk's pre-screen and error
texts, libtomlc99's conversions, cf_check() and the lenient accessors."""

from __future__ import annotations

import contextlib
import ctypes
import locale
import os
import platform
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_imp import conf as cf
from flux_imp.conf import cglob

from . import test_pathcheck as pc
from .test_pathcheck import NOBODY, effective, needs_root

conf = pc.conf  # fixture: a root-owned 0755 directory any euid can reach
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="compares with glibc")


def write(path: Path, text: str | bytes, mode: int = 0o644) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


def error(data: bytes) -> tuple[int, str]:
    """(lineno, text) of the ConfigError that parse() raises for ``data``."""
    with pytest.raises(cf.ConfigError) as info:
        cf.parse(data, "x.toml")
    assert info.value.filename == "x.toml"
    return info.value.lineno, info.value.text


def load(pattern: str | Path, **kw: object) -> tuple[dict[str, object], int]:
    return cf.load_glob(str(pattern), base=dict(kw) or None)


# -------------------------------------------------------- glob and merge


def test_glob_loads_in_sorted_order_with_shallow_merge(tmp_path: Path) -> None:
    write(tmp_path / "20-b.toml", 'top = "b"\n[sign]\nmax-ttl = 5\n')
    write(tmp_path / "10-a.toml", 'top = "a"\nonly-a = 1\n[sign]\ndefault-type = "none"\n')
    merged, count = load(tmp_path / "*.toml")
    assert count == 2
    # The later file's [sign] replaces the earlier one entirely.
    assert merged == {"top": "b", "only-a": 1, "sign": {"max-ttl": 5}}


def test_glob_sorts_bytewise_like_the_c_locale(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", 'v = "lower"\n')
    write(tmp_path / "B.toml", 'v = "upper"\n')
    assert load(tmp_path / "*.toml")[0]["v"] == "lower"  # "B" < "a"


def test_glob_skips_hidden_files(tmp_path: Path) -> None:
    write(tmp_path / ".hidden.toml", "bad =\n")
    assert load(tmp_path / "*.toml") == ({}, 0)


def test_no_match_returns_a_copy_of_base_and_zero(tmp_path: Path) -> None:
    base: dict[str, object] = {"disable-path-paranoia": True}
    merged, count = cf.load_glob(str(tmp_path / "*.toml"), base=base)
    assert (merged, count) == (base, 0)
    assert merged is not base


def test_missing_file_without_wildcard_is_no_match(tmp_path: Path) -> None:
    assert load(tmp_path / "nodir" / "imp.toml") == ({}, 0)


def test_missing_directory_under_wildcard_is_read_error(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nodir" / "*.toml")
    with pytest.raises(cf.ConfigError) as info:
        cf.load_glob(pattern)
    assert (info.value.filename, info.value.lineno, info.value.text) == (pattern, -1, "Read error")


def test_single_file_pattern_loads_it(tmp_path: Path) -> None:
    write(tmp_path / "imp.toml", "allow-sudo = true\n")
    assert load(tmp_path / "imp.toml") == ({"allow-sudo": True}, 1)


def test_any_file_error_aborts_the_whole_load(tmp_path: Path) -> None:
    write(tmp_path / "1.toml", "good = 1\n")
    bad = write(tmp_path / "2.toml", "\n\nbad =\n")
    base: dict[str, object] = {"keep": True}
    with pytest.raises(cf.ConfigError) as info:
        cf.load_glob(str(tmp_path / "*.toml"), base=base)
    got = (info.value.filename, info.value.lineno, info.value.text)
    assert got == (str(bad), 3, "syntax error")
    assert base == {"keep": True}


def test_base_keys_survive_and_are_overridden(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", "x = 2\n")
    assert load(tmp_path / "*.toml", x=1, y=1)[0] == {"x": 2, "y": 1}


def test_read_error_is_strerror(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()  # open() works on a directory, read() fails
    with pytest.raises(cf.ConfigError) as info:
        load(tmp_path / "*.toml", **{"disable-path-paranoia": True})
    assert info.value.text == "read error: Is a directory"
    assert info.value.lineno == -1


def test_unopenable_file_is_strerror(tmp_path: Path) -> None:
    (tmp_path / "dangling.toml").symlink_to(tmp_path / "nowhere")
    with pytest.raises(cf.ConfigError) as info:
        load(tmp_path / "*.toml", **{"disable-path-paranoia": True})
    assert (info.value.filename, info.value.text) == (
        str(tmp_path / "dangling.toml"),
        "No such file or directory",
    )


class _Glob(ctypes.Structure):
    _fields_ = [
        ("gl_pathc", ctypes.c_size_t),
        ("gl_pathv", ctypes.POINTER(ctypes.c_char_p)),
        ("gl_offs", ctypes.c_size_t),
        ("gl_flags", ctypes.c_int),
        *[(f"gl_fn{i}", ctypes.c_void_p) for i in range(5)],
    ]


def libc_glob(pattern: str) -> tuple[str, list[str]]:
    libc = ctypes.CDLL(None)
    g = _Glob()
    rc = libc.glob(pattern.encode(), 1, None, ctypes.byref(g))  # GLOB_ERR
    paths = [g.gl_pathv[i].decode() for i in range(g.gl_pathc)] if rc == 0 else []
    libc.globfree(ctypes.byref(g))
    return {0: "ok", 2: "aborted", 3: "nomatch"}[rc], paths


def our_glob(pattern: str) -> tuple[str, list[str]]:
    try:
        paths = sorted(cglob.glob(pattern), key=os.fsencode)
    except cglob.ReadError:
        return "aborted", []
    return ("ok" if paths else "nomatch"), paths


GLOB_TREE = [
    "a.toml", "b.toml", ".hidden.toml", "c.txt", "x[1].toml", "q?.toml", "star*.toml",
    "back\\slash.toml", "sub/d.toml", "sub/e.toml", "sub/deep/g.toml", "sub2/f.toml",
]  # fmt: skip
GLOB_PATTERNS = [
    "*.toml", "*", ".*", "a.toml", "missing.toml", "nodir/*.toml", "nodir/a.toml",
    "*/*.toml", "s*/*.toml", "sub/*", "sub*/", "*/", "sub/", "a.toml/", "x[1].toml",
    "x\\[1\\].toml", "x[[]1].toml", "q\\?.toml", "back\\\\slash.toml", "[ab].toml",
    "[!a].toml", "*/deep/*.toml", "*/nope/*.toml", "dlink/*", "filelink/*",
    "dangling.toml", "a\\.toml", "nodir/a\\.toml", "", "sub//d.toml", "./*.toml",
    "[a", "star\\*.toml", "**/*.toml", "sub\\/*.toml", "nodir\\x/*.toml", "a\\",
]  # fmt: skip


@glibc
def test_glob_matches_libc_glob_with_glob_err(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in GLOB_TREE:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path / name, "")
    (tmp_path / "dangling.toml").symlink_to("nowhere")
    (tmp_path / "dlink").symlink_to("nowhere")
    (tmp_path / "filelink").symlink_to("a.toml")
    monkeypatch.chdir(tmp_path)
    for pattern in [*GLOB_PATTERNS, f"{tmp_path}/*.toml", f"{tmp_path}/sub/*.toml"]:
        assert our_glob(pattern) == libc_glob(pattern), pattern


# ------------------------------------------------------------ paranoia


@needs_root
def test_paranoia_is_on_for_root_by_default(tmp_path: Path) -> None:
    path = write(tmp_path / "imp.toml", "a = 1\n")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(cf.ConfigError) as info:
        load(tmp_path / "*.toml")
    assert (info.value.filename, info.value.lineno, info.value.text) == (
        str(path),
        -1,
        "unable to open: insecure file ownership",
    )


@needs_root
def test_disable_path_paranoia_from_base(tmp_path: Path) -> None:
    os.chown(write(tmp_path / "imp.toml", "a = 1\n", 0o666), NOBODY, NOBODY)
    merged, _ = load(tmp_path / "*.toml", **{"disable-path-paranoia": True})
    assert merged["a"] == 1


@needs_root
def test_disable_path_paranoia_from_a_file_that_sorts_earlier(tmp_path: Path) -> None:
    write(tmp_path / "00-test.toml", "disable-path-paranoia = true\n")
    os.chown(write(tmp_path / "10-imp.toml", "a = 1\n"), NOBODY, NOBODY)
    assert load(tmp_path / "*.toml")[0]["a"] == 1


@needs_root
def test_paranoia_setting_does_not_cover_its_own_file(tmp_path: Path) -> None:
    path = write(tmp_path / "00-test.toml", "disable-path-paranoia = true\n")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(cf.ConfigError, match="insecure file ownership"):
        load(tmp_path / "*.toml")


@needs_root
def test_paranoia_switch_must_be_a_boolean(tmp_path: Path) -> None:
    write(tmp_path / "00-test.toml", 'disable-path-paranoia = "true"\n')
    os.chown(write(tmp_path / "10-imp.toml", "a = 1\n"), NOBODY, NOBODY)
    with pytest.raises(cf.ConfigError, match="insecure file ownership"):
        load(tmp_path / "*.toml")


@needs_root
def test_enable_path_paranoia_wins_over_disable(tmp_path: Path) -> None:
    write(tmp_path / "00-test.toml", "enable-path-paranoia = true\n")
    write(tmp_path / "10-imp.toml", "a = 1\n", 0o666)
    with pytest.raises(cf.ConfigError) as info:
        load(tmp_path / "*.toml", **{"disable-path-paranoia": True})
    assert info.value.text == "unable to open: bad file permissions (0666)"


@needs_root
def test_paranoia_is_off_for_an_unprivileged_caller(conf: Path) -> None:
    write(conf / "imp.toml", "a = 1\n", 0o666)  # root-owned and world-writable
    with effective(NOBODY, NOBODY):
        assert load(conf / "*.toml")[0] == {"a": 1}
        with pytest.raises(cf.ConfigError, match="bad file permissions"):
            load(conf / "*.toml", **{"enable-path-paranoia": True})


@needs_root
def test_paranoia_rejects_a_directory_as_not_regular(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(cf.ConfigError) as info:
        load(tmp_path / "*.toml")
    assert info.value.text == "unable to open: File is not a regular file"


# ------------------------------------------------- tomltk's pre-screen


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"a = 1\0", "Config contains embedded NUL byte"),
        (b"a = \xff", "Invalid UTF-8 byte (0xFF) at position 4"),
        (b"a = \xc0\x80", "Invalid UTF-8 byte (0xC0) at position 4"),
        (b"a = \x80", "Invalid UTF-8 byte (0x80) at position 4"),
        (b'a = "\xe2\x82', "Truncated UTF-8 sequence at position 5"),
        (b"a = \xc3A", "Invalid UTF-8 continuation byte (0x41) at position 5"),
        (b"a = 1\x01", "Invalid control character (0x01) at position 5"),
        (b"a = 1\x7f", "Invalid control character (0x7F) at position 5"),
        (b"a = 1\x0c", "Invalid control character (0x0C) at position 5"),
        (b"\n" * 10001, "Input too large (>10000 lines)"),
        (b"a = " + b"[" * 33 + b"]" * 33, "Excessive bracket nesting depth (33)"),
        (b"[a\n", "Unbalanced brackets"),
        (b"a = 1]\n[b\n", "Unbalanced brackets"),
        (b'a = """"""', "Adjacent triple-quote sequences not allowed"),
        (b"a = ''''''", "Adjacent triple-quote sequences not allowed"),
        (b'a = """x\n', 'Unterminated multi-line string (""")'),
        (b"a = '''x\n", "Unterminated multi-line string (''')"),
        (b'a = """x\\"""\n', 'Unterminated multi-line string (""")'),
        (b"a = [\n 1, # one\n 2,\n]\n", "Comment character inside array value"),
        (b"a = [ # c\n]\n", "Comment character inside array value"),
    ],
)
def test_prescreen_rejects(data: bytes, text: str) -> None:
    assert error(data) == (-1, text)


@pytest.mark.parametrize(
    "data",
    [
        b"\n" * 10000 + b"a = 1",
        b"a = " + b"[" * 32 + b"]" * 32,
        b"[t] # a comment after a header\nx = 1\n",
        b"a = [1, 2] # after the array\n",
        b'a = ["#", "]", "["]\n',
        b'a = "\x01"\n',  # control characters are left to the parser in strings
        b"a = '''x\n'''\n",
        b'a = """\\""""\n',
        b"# [ in a comment\n",
        b"a = 1\r\n",
    ],
)
def test_prescreen_lets_through(data: bytes) -> None:
    try:
        cf.parse(data)
    except cf.ConfigError as exc:
        assert exc.lineno > 0, exc.text  # a parse error, not a pre-screen one


# --------------------------------------------------------- parse errors


def test_syntax_error_has_upstream_text_and_line() -> None:
    assert error(b"bad =") == (1, "syntax error")
    assert error(b"a = 1\nb = 2\nbad =\n") == (3, "syntax error")


@pytest.mark.parametrize(
    ("data", "lineno", "text"),
    [
        (b"a\n", 1, "missing ="),
        (b'a = "x\n', 1, "unterminated quote"),
        (b"a = 'x\n", 1, "unterminated s-quote"),
        (b"a = 'x\nb = 'y'\n", 1, "unterminated s-quote"),
        (b'a = "\\q"\n', 1, "bad escape char"),
        (b'a = "\\u12"\n', 1, "expect hex char"),
        (b"[a b]\n", 1, "expects ]"),
        (b"[[a b]]\n", 1, "expects ]]"),
        (b"x = 1\na = 1 2\n", 2, "extra chars after value"),
        (b"[a] x\n", 1, "extra chars after ] or ]]"),
        (b"a = {x = 1\n", 1, "newline not allowed in inline table"),
        (b"[ ]\n", 1, "invalid or missing key"),
        (b"a = @\n", 1, "syntax error"),
    ],
)
def test_toml_error_texts_follow_libtomlc99(data: bytes, lineno: int, text: str) -> None:
    assert error(data) == (lineno, text)


def test_duplicate_key_is_an_error_on_its_line() -> None:
    assert error(b"a = 1\na = 2\nb = 3\n")[0] == 2


# --------------------------------------- libtomlc99's arrays and values


MISMATCH = "array type mismatch while processing array of "


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"a = [1, 2.0]", MISMATCH + "values"),
        (b'a = [1, "x"]', MISMATCH + "values"),
        (b"a = [1, 9223372036854775808]", MISMATCH + "values"),
        (b"a = [1979-05-27, 1979-05-27T00:00:00]", MISMATCH + "values"),
        (b"a = [1, [2]]", MISMATCH + "arrays"),
        (b"a = [1, {x = 1}]", MISMATCH + "tables"),
        (b"a = [[1], 2]", "a string array can only contain strings"),
        (b"a = [{x = 1}, 1]", "a string array can only contain strings"),
        (b"[t]\na = [[1], [1, true]]", MISMATCH + "values"),
    ],
)
def test_mixed_arrays_are_refused(data: bytes, text: str) -> None:
    assert error(data) == (-1, text)


def test_homogeneous_arrays_pass() -> None:
    assert cf.parse(b'a = [[1], ["x"]]\nb = [1, 0x10]\n[[c]]\nx = 1\n[[c]]\ny = 2\n') == {
        "a": [[1], ["x"]],
        "b": [1, 16],
        "c": [{"x": 1}, {"y": 2}],
    }


def test_keys_are_ordered_values_then_arrays_then_tables() -> None:
    table = cf.parse(b"t = {x = 1}\na = [1]\nv = 2\n[u]\n")
    assert list(table) == ["v", "a", "t", "u"]


def test_scalars_map_directly() -> None:
    assert cf.parse(b's = "x"\ni = -3\nf = 2.5\nb = false\nh = 0xff\ne = inf\n') == {
        "s": "x",
        "i": -3,
        "f": 2.5,
        "b": False,
        "h": 255,
        "e": float("inf"),
    }


UTC = timezone.utc


@pytest.mark.parametrize(
    ("literal", "when"),
    [
        ("1979-05-27T07:32:00Z", datetime(1979, 5, 27, 7, 32, tzinfo=UTC)),
        ("1979-05-27T07:32:00", datetime(1979, 5, 27, 7, 32, tzinfo=UTC)),
        ("1979-05-27 07:32:00", datetime(1979, 5, 27, 7, 32, tzinfo=UTC)),
        # The offset and the fraction are dropped, as tomltk does.
        ("1979-05-27T07:32:00-08:00", datetime(1979, 5, 27, 7, 32, tzinfo=UTC)),
        ("1979-05-27T07:32:00.999Z", datetime(1979, 5, 27, 7, 32, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_datetimes_become_utc_timestamps(literal: str, when: datetime) -> None:
    assert cf.parse(f"t = {literal}".encode()) == {"t": when}


@pytest.mark.parametrize(
    "data",
    [
        b"t = 1979-05-27",  # a bare date
        b"t = 07:32:00",  # a bare time
        b"t = 1969-12-31T23:59:59Z",  # before the epoch
        b"[x]\nt = [1979-05-27]",
        b"x = 1" + b"0" * 400,  # too big even for a double
        b"x = 1e400",  # strtod() overflow
        b"x = 1e-400",  # strtod() underflow
        b"x = 2e-310",  # subnormal: underflow too
    ],
)
def test_unconvertible_values_are_refused(data: bytes) -> None:
    assert error(data) == (-1, "converting TOML to JSON: Invalid argument")


def test_integer_beyond_int64_becomes_a_double() -> None:
    assert cf.parse(b"x = 9223372036854775808\ny = -9223372036854775809") == {
        "x": 9223372036854775808.0,
        "y": -9223372036854775809.0,
    }
    assert cf.parse(b"x = 9223372036854775807") == {"x": 2**63 - 1}


def test_strings_end_at_nul_like_c_strings() -> None:
    assert cf.parse(b'allowed-shells = ["/bin/sh\\u0000evil"]\n"k\\u0000x" = 1') == {
        "k": 1,
        "allowed-shells": ["/bin/sh"],
    }


def test_invalid_utf8_in_strings_is_refused_like_jansson() -> None:
    # A surrogate (ED A0 80) passes tomltk's pre-screen but not jansson.
    assert error(b'a = "\xed\xa0\x80"') == (-1, "converting TOML to JSON: Cannot allocate memory")
    assert cf.parse(b"# \xed\xa0\x80 in a comment\na = 1") == {"a": 1}


def test_moderate_inline_nesting_parses_and_deep_is_refused() -> None:
    assert cf.parse(b"a = " + b"{b = " * 30 + b"1" + b"}" * 30)
    assert error(b"a = " + b"{b = " * 2000 + b"1" + b"}" * 2000) == (-1, "Excessive nesting depth")


def test_control_characters_in_strings_and_comments_are_kept() -> None:
    # libtomlc99 takes them raw where tomllib would refuse them.
    data = b'a = "x\x01y"\n# \x7f\nb = \'\x02\'\n"k\x03" = """\x04"""\n'
    assert cf.parse(data) == {"a": "x\x01y", "b": "\x02", "k\x03": "\x04"}


def test_empty_document_is_an_empty_table() -> None:
    assert cf.parse(b"") == {}


TOKENS = [
    b'"', b"'", b'"""', b"'''", b"\\", b"#", b"[", b"]", b"[[", b"]]", b"{", b"}", b"\n",
    b" ", b"a", b"=", b",", b".", b"1", b"1e400", b"9223372036854775808", b"1979-05-27",
    b"T07:32:00", b"Z", b"\\u0000", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"true", b"inf",
    b"\x01", b"\xc3\xa9", b"a = ", b"\n[t]\n",
]  # fmt: skip


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(TOKENS)).map(b"".join)))
def test_parse_raises_only_config_error(data: bytes) -> None:
    try:
        table = cf.parse(data)
    except cf.ConfigError as exc:
        assert isinstance(exc.text, str)
        assert len(exc.text.encode("utf-8", "surrogateescape")) <= 199
    else:
        assert isinstance(table, dict)


KEYS = st.text(alphabet="abcxyz-_", min_size=1, max_size=8)
SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\"'\\\n\r\0")),
)


@given(st.dictionaries(KEYS, SCALARS))
def test_simple_documents_round_trip(table: dict[str, object]) -> None:
    def literal(v: object) -> str:
        return str(v).lower() if isinstance(v, bool) else f'"{v}"' if isinstance(v, str) else str(v)

    doc = "".join(f"{k} = {literal(v)}\n" for k, v in table.items())
    assert cf.parse(doc.encode()) == table


# -------------------------------------------------------------- cf_check

OPTS = [
    cf.Option("max-ttl", "int64", True),
    cf.Option("default-type", "string", True),
    cf.Option("allowed-types", "array", False),
]


def check_error(table: object, *, strict: bool = True, anytab: bool = False) -> str:
    with pytest.raises(cf.ConfigError) as info:
        cf.check(table, OPTS, strict=strict, anytab=anytab)
    assert (info.value.filename, info.value.lineno) == ("", -1)
    return info.value.text


def test_check_invalid_config_object() -> None:
    assert check_error([1]) == "invalid config object"
    assert check_error(None) == "invalid config object"


def test_check_first_unknown_key_in_order() -> None:
    table = {"max-ttl": 1, "default-type": "x", "zz": 1, "aa": 2}
    assert check_error(table) == "key 'zz' is unknown"


def test_check_not_strict_ignores_unknown_keys() -> None:
    cf.check({"max-ttl": 1, "default-type": "x", "zz": 1}, OPTS, strict=False, anytab=False)


def test_check_anytab_allows_unknown_tables_and_timestamps_only() -> None:
    table: dict[str, object] = {"max-ttl": 1, "default-type": "x", "munge": {}}
    table["when"] = datetime(2020, 1, 1, tzinfo=UTC)  # an object upstream
    cf.check(table, OPTS, strict=True, anytab=True)
    assert check_error(table) == "key 'munge' is unknown"
    assert check_error({**table, "list": []}, anytab=True) == "key 'list' is unknown"


def test_check_must_be_set() -> None:
    assert check_error({"default-type": "x"}) == "'max-ttl' must be set"
    cf.check({"max-ttl": 1, "default-type": "x"}, OPTS, strict=True, anytab=False)


@pytest.mark.parametrize(
    ("table", "text"),
    [
        ({"max-ttl": "1", "default-type": "x"}, "'max-ttl' must be of type int64"),
        ({"max-ttl": True, "default-type": "x"}, "'max-ttl' must be of type int64"),
        ({"max-ttl": 1.0, "default-type": "x"}, "'max-ttl' must be of type int64"),
        ({"max-ttl": 1, "default-type": 1}, "'default-type' must be of type string"),
        (
            {"max-ttl": 1, "default-type": "x", "allowed-types": ""},
            "'allowed-types' must be of type array",
        ),
        ({"max-ttl": "1"}, "'max-ttl' must be of type int64"),  # options are checked in order
    ],
)  # fmt: skip
def test_check_must_be_of_type(table: dict[str, object], text: str) -> None:
    assert check_error(table) == text


def test_config_error_text_is_truncated_like_the_c_buffer() -> None:
    key = "k" * 300
    text = check_error({key: 1})
    assert text == f"key '{key}'"[:199]
    assert str(cf.ConfigError("f", 3, "x" * 500)) == "x" * 199


# ------------------------------------------------------------ accessors


def test_typeof_names_every_type() -> None:
    values = [1, 1.5, True, "s", datetime(2020, 1, 1, tzinfo=UTC), {}, [], None, b"x"]
    names = ["int64", "double", "bool", "string", "timestamp", "table", "array"]
    assert [cf.typeof(v) for v in values] == [*names, "unknown", "unknown"]


def test_get_in_is_lenient() -> None:
    assert cf.get_in({"a": 1}, "a") == 1
    assert cf.get_in({"a": 1}, "b") is None
    assert cf.get_in([1], "a") is None
    assert cf.get_in(None, "a") is None


def test_as_int_str_bool_read_wrong_types_as_defaults() -> None:
    assert [cf.as_int(v) for v in (7, True, 1.0, "1", None)] == [7, 0, 0, 0, 0]
    assert [cf.as_str(v) for v in ("x", 1, None, ["x"])] == ["x", "", "", ""]
    assert [cf.as_bool(v) for v in (True, False, "true", 1, None)] == [True] + [False] * 4


def test_as_timestamp() -> None:
    assert cf.as_timestamp(datetime(1970, 1, 2, tzinfo=UTC)) == 86400
    assert cf.as_timestamp(datetime(1970, 1, 2)) == 86400  # naive means UTC
    assert cf.as_timestamp(datetime(1970, 1, 2, tzinfo=timezone(timedelta(hours=1)))) == 82800
    assert cf.as_timestamp(datetime(1969, 1, 1, tzinfo=UTC)) == 0
    assert cf.as_timestamp(86400) == 0
    loaded = cf.parse(b"t = 2003-08-24T05:14:50Z")
    assert cf.as_timestamp(loaded["t"]) == 1061702090


def test_array_contains_exact_strings_only() -> None:
    users = ["alice", 1, True, "bob"]
    assert cf.array_contains(users, "bob")
    assert not cf.array_contains(users, "1")
    assert not cf.array_contains(users, "bo")
    assert not cf.array_contains("alice", "alice")
    assert not cf.array_contains(None, "alice")


@pytest.mark.parametrize(
    ("pattern", "text", "matched"),
    [
        ("*", "a/b", True),  # flags 0: '*' crosses '/'
        ("*", ".hidden", True),  # and matches a leading '.'
        ("/usr/*sh", "/usr/local/bin/bash", True),
        ("?", "é", False),  # one byte, not one character
        ("??", "é", True),
        ("\\*", "*", True),
        ("\\*", "x", False),
        ("a\\", "a\\", False),  # a trailing backslash matches nothing
        ("[!a]", "b", True),
        ("[!a]", "a", False),
        ("[^a]", "b", True),  # glibc takes '^' like '!'
        ("[]a]", "]", True),
        ("[a-]", "-", True),
        ("[z-a]", "m", False),
        ("[\\]]", "]", True),
        ("[[:digit:]]x", "7x", True),
        ("[[:bogus:]]", "b", False),
        ("[ab", "[ab", True),  # unterminated: '[' is literal
        ("[ab", "a", False),
        ("[[", "[[", True),
        ("[[.-.]]", "-", True),
        ("[[=a=]]", "a", True),
        ("[[.ab.]]", "a", False),
        ("user[0-9]", "user7", True),
    ],
)
def test_array_contains_match_follows_glibc_fnmatch(pattern: str, text: str, matched: bool) -> None:
    assert cf.array_contains_match([1, pattern], text) is matched


def test_array_contains_match_ignores_non_strings_and_non_arrays() -> None:
    assert not cf.array_contains_match([1, None], "1")
    assert not cf.array_contains_match("*", "x")


@contextlib.contextmanager
def c_locale() -> Iterator[ctypes.CDLL]:
    # glibc's fnmatch works on bytes only in the "C" locale, as in the IMP.
    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield ctypes.CDLL(None)
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


FN_TOKENS = [
    "[", "]", "!", "^", "-", "\\", "*", "?", ".", ":", "=", "a", "b", "A", "1", " ", "é",
    "[:alpha:]", "[:digit:]", "[:foo:]", "[:", ":]", "[=a=]", "[=", "[.a.]", "[.ab.]", "[.",
]  # fmt: skip


@glibc
@settings(max_examples=2000)
@given(
    st.lists(st.sampled_from(FN_TOKENS), max_size=8).map("".join),
    st.text(alphabet="abA1 -][.:=!\\é^", max_size=5),
)
def test_fnmatch_matches_libc(pattern: str, text: str) -> None:
    with c_locale() as libc:
        libc.fnmatch.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        expected = libc.fnmatch(pattern.encode(), text.encode(), 0) == 0
        expected_period = libc.fnmatch(pattern.encode(), text.encode(), 4) == 0  # FNM_PERIOD
    assert cf.array_contains_match([pattern], text) is expected
    assert cglob._fnmatch(pattern.encode(), text.encode(), period=True) is expected_period


def test_check_sees_a_timestamp_as_upstream_object() -> None:
    when = datetime(2020, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(cf.ConfigError) as info:
        cf.check(when, [cf.Option("socket-path", "string", False)], strict=True, anytab=False)
    assert info.value.text == "key 'iso-8601-ts' is unknown"
