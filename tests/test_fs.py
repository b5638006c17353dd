"""flux_imp.fs: os.path's answers, without importing os."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_imp import fs

paths = st.text(alphabet="/ab.", max_size=8)


@given(paths, paths)
def test_path_strings_match_posixpath(a: str, b: str) -> None:
    assert fs.dirname(a) == posixpath.dirname(a)
    assert fs.basename(a) == posixpath.basename(a)
    assert fs.join(a, b) == posixpath.join(a, b)


def test_queries_match_os_path(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("")
    (tmp_path / "to-d").symlink_to(tmp_path / "d")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    for name in ("d", "f", "to-d", "dangling", "missing", "f/under-a-file"):
        path = str(tmp_path / name)
        assert fs.is_dir(path) == os.path.isdir(path), name
        assert fs.is_file(path) == os.path.isfile(path), name
        assert fs.exists(path) == os.path.exists(path), name
        assert fs.lexists(path) == os.path.lexists(path), name
    assert fs.is_dir("a\0b") is False  # os.path's answer for an embedded NUL, too
    assert fs.same_file(str(tmp_path / "to-d"), str(tmp_path / "d"))
    assert not fs.same_file(str(tmp_path / "d"), str(tmp_path / "f"))
    assert not fs.same_file(str(tmp_path / "missing"), str(tmp_path / "missing"))


def test_fs_encoding_round_trips() -> None:
    raw = b"caf\xc3\xa9-\xff"
    assert fs.fsencode(fs.fsdecode(raw)) == raw
    assert fs.fsdecode(raw) == os.fsdecode(raw)


def test_read_file_reads_all_of_a_file_past_one_read(tmp_path: Path) -> None:
    data = os.urandom(200_000)  # beyond one 64 KiB read
    (tmp_path / "f").write_bytes(data)
    assert fs.read_file(str(tmp_path / "f")) == data
    assert fs.read_file("/proc/self/cgroup") == Path("/proc/self/cgroup").read_bytes()


def test_read_file_raises_what_open_and_read_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fs.read_file(str(tmp_path / "missing"))
    with pytest.raises(IsADirectoryError):
        fs.read_file(str(tmp_path))
