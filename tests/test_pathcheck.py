"""path_is_secure(): each check of flux-security's path.c, in order, by
text, for an unprivileged caller; as root, the root-only rule, and every
directory up to "/" unless a test build asked for upstream's parent-only
check."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import posix
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_imp.conf import pathcheck
from flux_imp.conf.pathcheck import PathError, c_dirname, path_is_secure

from . import users

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown and seteuid")


def reason(path: str | Path) -> str | None:
    """The PathError text for ``path``, or None when it is secure."""
    try:
        path_is_secure(str(path))
    except PathError as exc:
        assert str(exc) == exc.text
        return exc.text
    return None


@contextlib.contextmanager
def effective(uid: int, gid: int) -> Iterator[None]:
    """Run the body with the given effective ids (root only)."""
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def conf() -> Iterator[Path]:
    """A root-owned 0755 directory reachable by any euid (unlike tmp_path)."""
    with users.world_dir("pathcheck.") as top:
        d = top / "conf.d"
        d.mkdir(mode=0o755)
        d.chmod(0o755)  # mkdir's mode is masked by the umask
        yield d


def make(path: Path, mode: int = 0o644, owner: tuple[int, int] | None = None) -> Path:
    path.write_text("a = 1\n")
    path.chmod(mode)
    if owner is not None:
        os.chown(path, *owner)
    return path


# ------------------------------------------------------------ the file


def test_filename_not_defined() -> None:
    assert reason("") == "Filename not defined"
    # A C string ends at its first NUL.
    assert reason("\0/etc/passwd") == "Filename not defined"


def test_secure_file_passes(conf: Path) -> None:
    assert reason(make(conf / "ok.toml")) is None


def test_stat_failure_is_strerror(conf: Path) -> None:
    assert reason(conf / "missing.toml") == "No such file or directory"
    assert reason(make(conf / "file") / "x") == "Not a directory"
    # Too long for the kernel: stat fails before the dirname length check.
    assert reason("/" + "x" * 5000) == "File name too long"


def test_dangling_symlink_is_strerror(conf: Path) -> None:
    (conf / "dangling.toml").symlink_to(conf / "nowhere")
    assert reason(conf / "dangling.toml") == "No such file or directory"


def test_not_a_regular_file(conf: Path) -> None:
    assert reason(conf) == "File is not a regular file"
    assert reason("/dev/null") == "File is not a regular file"


def test_type_is_checked_before_symlink(conf: Path) -> None:
    (conf / "dirlink").symlink_to(conf)
    assert reason(conf / "dirlink") == "File is not a regular file"


def test_symbolic_link(conf: Path) -> None:
    make(conf / "real.toml")
    (conf / "link.toml").symlink_to(conf / "real.toml")
    assert reason(conf / "link.toml") == "symbolic link"


@needs_root
def test_symlink_is_checked_before_owner_and_mode(conf: Path) -> None:
    make(conf / "real.toml", 0o666, (NOBODY, NOBODY))
    (conf / "link.toml").symlink_to(conf / "real.toml")
    assert reason(conf / "link.toml") == "symbolic link"


@needs_root
def test_insecure_file_ownership(conf: Path) -> None:
    assert reason(make(conf / "f.toml", 0o600, (NOBODY, 0))) == "insecure file ownership"


@needs_root
def test_owner_is_checked_before_mode(conf: Path) -> None:
    assert reason(make(conf / "f.toml", 0o666, (NOBODY, 0))) == "insecure file ownership"


@needs_root
def test_file_owned_by_effective_uid_passes(conf: Path) -> None:
    os.chown(conf, NOBODY, NOBODY)
    path = make(conf / "f.toml", 0o644, (NOBODY, NOBODY))
    with effective(NOBODY, NOBODY):
        assert reason(path) is None
    # ...but not for root, who does not own it.
    assert reason(path) == "insecure file ownership"


def test_bad_file_permissions_world_writable(conf: Path) -> None:
    assert reason(make(conf / "f.toml", 0o666)) == "bad file permissions (0666)"
    assert reason(make(conf / "g.toml", 0o602)) == "bad file permissions (0602)"


def test_bad_file_permissions_shows_special_bits(conf: Path) -> None:
    assert reason(make(conf / "f.toml", 0o4646)) == "bad file permissions (4646)"


@needs_root
def test_group_writable_with_effective_gid_passes_unprivileged(conf: Path) -> None:
    os.chown(conf, NOBODY, NOBODY)
    path = make(conf / "f.toml", 0o660, (NOBODY, NOBODY))
    with effective(NOBODY, NOBODY):
        assert reason(path) is None


@needs_root
def test_root_trusts_no_group_with_the_file(conf: Path) -> None:
    # A setuid IMP's egid is the caller's: upstream would let its group edit the file.
    assert reason(make(conf / "f.toml", 0o660, (0, os.getegid()))) == "bad file permissions (0660)"
    assert reason(make(conf / "g.toml", 0o620, (0, 0))) == "bad file permissions (0620)"


@needs_root
def test_bad_file_permissions_group_writable_other_group(conf: Path) -> None:
    path = make(conf / "f.toml", 0o660, (0, NOBODY))
    assert reason(path) == "bad file permissions (0660)"


@needs_root
def test_group_zero_is_not_trusted_for_files(conf: Path) -> None:
    # Unlike the parent directory check, gid 0 is no exception for the file.
    os.chown(conf, NOBODY, NOBODY)
    path = make(conf / "f.toml", 0o660, (NOBODY, 0))
    with effective(NOBODY, NOBODY):
        assert reason(path) == "bad file permissions (0660)"


# ---------------------------------------------------------- the parent


def test_unable_to_stat_parent_directory(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only a race can make the parent vanish after stat(file) succeeded.
    path = make(conf / "f.toml")
    real_lstat = os.lstat

    def lstat(p: str) -> os.stat_result:
        if p == str(conf):
            raise FileNotFoundError(2, "gone")
        return real_lstat(p)

    monkeypatch.setattr(posix, "lstat", lstat)  # what pathcheck calls (os re-exports it)
    assert reason(path) == "Unable to stat parent directory"


def test_parent_symlink_is_unexpected_file_type(conf: Path) -> None:
    make(conf / "f.toml")
    (conf.parent / "link.d").symlink_to(conf)
    assert (
        reason(conf.parent / "link.d" / "f.toml")
        == "Unable to check parent directory. Unexpected file type"
    )


@needs_root
@pytest.mark.parametrize(("uid", "gid", "mode", "expected"), [
    (NOBODY, 0, 0o755, "Invalid ownership on parent directory"),
    (0, NOBODY, 0o770, "parent directory is group-writable without sticky bit"),
    (0, NOBODY, 0o1770, None),
    (0, 0, 0o775, "parent directory is group-writable without sticky bit"),
], ids=["not-roots", "group-writable", "group-writable-sticky", "root-group-writable"])  # fmt: skip
def test_parent_directory_ownership_and_group_write(
    conf: Path, uid: int, gid: int, mode: int, expected: str | None
) -> None:
    path = make(conf / "f.toml")
    os.chown(conf, uid, gid)
    conf.chmod(mode)
    assert reason(path) == expected


@needs_root
def test_parent_group_writable_by_root_or_effective_group_passes(conf: Path) -> None:
    path = make(conf / "f.toml", 0o644, (NOBODY, NOBODY))
    conf.chmod(0o775)
    os.chown(conf, NOBODY, 0)
    with effective(NOBODY, NOBODY):
        assert reason(path) is None  # group 0 is trusted for directories
    os.chown(conf, NOBODY, NOBODY)
    with effective(NOBODY, NOBODY):
        assert reason(path) is None  # and so is the effective group


@needs_root
def test_parent_world_writable_without_sticky_bit(conf: Path) -> None:
    path = make(conf / "f.toml")
    conf.chmod(0o707)
    assert reason(path) == "parent directory is world-writable without sticky bit"
    conf.chmod(0o777)  # root trusts no group: the group check comes first
    assert reason(path) == "parent directory is group-writable without sticky bit"
    os.chown(conf, NOBODY, 0)
    os.chown(path, NOBODY, NOBODY)
    with effective(NOBODY, NOBODY):  # upstream trusts group 0: the world check fails
        assert reason(path) == "parent directory is world-writable without sticky bit"


def test_parent_world_writable_with_sticky_bit_passes(conf: Path) -> None:
    path = make(conf / "f.toml")
    conf.chmod(0o1777)
    assert reason(path) is None


@pytest.fixture
def test_build_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a test build of the IMP: privileged checks stop at the parent."""
    monkeypatch.setattr(pathcheck, "_whole_tree", True)
    pathcheck.use_test_build_rule()


def sub_of(conf: Path, mode: int) -> Path:
    """``conf/sub`` (0755, root's), with ``conf`` given ``mode``: a grandparent."""
    sub = conf / "sub"
    sub.mkdir()
    sub.chmod(0o755)
    conf.chmod(mode)
    return sub


@needs_root
def test_test_build_checks_only_the_immediate_parent(conf: Path, test_build_rule: None) -> None:
    assert reason(make(sub_of(conf, 0o777) / "f.toml")) is None


@needs_root
def test_unprivileged_checks_only_the_immediate_parent(conf: Path) -> None:
    sub = sub_of(conf, 0o777)
    os.chown(sub, NOBODY, NOBODY)
    path = make(sub / "f.toml", 0o644, (NOBODY, NOBODY))
    with effective(NOBODY, NOBODY):
        assert reason(path) is None


# ------------------------------------- every directory above, as root


@needs_root
@pytest.mark.parametrize(("mode", "owner", "how"), [
    (0o777, 0, "ancestor directory {} is group-writable without sticky bit"),
    (0o757, 0, "ancestor directory {} is world-writable without sticky bit"),
    (0o755, NOBODY, "Invalid ownership on ancestor directory {}"),
    (0o1777, 0, None),
    (0o1775, 0, None),
], ids=["group-writable", "world-writable", "not-roots", "sticky", "group-sticky"])  # fmt: skip
def test_root_checks_every_directory_above(conf: Path, mode: int, owner: int,
                                           how: str | None) -> None:
    sub = sub_of(conf, mode)
    os.chown(conf, owner, 0)
    assert reason(make(sub / "f.toml")) == (how and how.format(conf))


@needs_root
def test_ancestor_check_follows_symlinks(conf: Path) -> None:
    # conf/link -> open: "open" is searched on the way, not "link"'s text.
    opened = conf / "open"
    sub_of(opened.parent, 0o755)
    opened.mkdir()
    sub = opened / "sub"
    sub.mkdir()
    sub.chmod(0o755)
    (conf / "link").symlink_to("open")
    path = make(sub / "f.toml")
    opened.chmod(0o755)
    assert reason(conf / "link" / "sub" / "f.toml") is None
    opened.chmod(0o757)
    assert reason(conf / "link" / "sub" / "f.toml") == (
        f"ancestor directory {opened} is world-writable without sticky bit")
    assert reason(path) == f"ancestor directory {opened} is world-writable without sticky bit"


@needs_root
def test_ancestors_of_an_absolute_link_target(conf: Path) -> None:
    real, elsewhere = conf / "real", conf / "elsewhere"
    for directory in (real, elsewhere):
        directory.mkdir()
    make(sub_of(real, 0o757) / "f.toml")
    elsewhere.chmod(0o755)
    (elsewhere / "link").symlink_to(real)
    assert reason(elsewhere / "link" / "sub" / "f.toml") == (
        f"ancestor directory {real} is world-writable without sticky bit")


def test_searched_directories_take_dot_dot_from_the_link_target(conf: Path) -> None:
    (conf / "other" / "x").mkdir(parents=True)
    (conf / "other" / "y").mkdir()
    (conf / "b").symlink_to(conf / "other" / "x")
    # Only conf/other has a "y": the walk fails unless ".." is the target's parent.
    found = pathcheck._searched_directories(f"{conf}/b/../y")
    assert f"{conf}/other/x" in found
    assert f"{conf}/b" not in found


# ------------------------------------------------------------- dirname


@pytest.mark.parametrize(
    ("path", "parent"),
    [
        ("foo", "."),
        ("/foo", "/"),
        ("//foo", "//"),
        ("///foo", "/"),
        ("/a/b", "/a"),
        ("a//b", "a"),
        ("a/b/", "a"),
        ("a/b//", "a"),
        ("/", "/"),
        ("//", "//"),
        ("", "."),
        ("..", "."),
    ],
)
def test_c_dirname_follows_glibc(path: str, parent: str) -> None:
    assert c_dirname(path) == parent


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="compares with glibc dirname")
@given(st.text(alphabet="/a.", max_size=8))
def test_c_dirname_matches_libc(path: str) -> None:
    libc = ctypes.CDLL(None)
    libc.dirname.restype = ctypes.c_char_p
    libc.dirname.argtypes = [ctypes.c_char_p]
    buf = ctypes.create_string_buffer(path.encode())
    assert c_dirname(path) == libc.dirname(buf).decode()


def test_mode_text_has_no_file_type_bits(conf: Path) -> None:
    path = make(conf / "f.toml", 0o646)
    assert stat.S_IFMT(path.stat().st_mode)  # the raw mode has them
    assert reason(path) == "bad file permissions (0646)"
