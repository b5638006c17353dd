"""Real, temporary Unix users for tests and the demo (created with useradd),
dropping to them, and temp dirs they can reach."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path


def _remove_leftovers(prefix: str) -> None:
    # Users of this prefix whose creating process is gone: a crash's leftovers.
    for entry in pwd.getpwall():
        head, _, pid = entry.pw_name.rpartition("-")
        if head == prefix and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["userdel", "-f", entry.pw_name], capture_output=True, check=False)


@contextlib.contextmanager
def temp_user(prefix: str, home: Path) -> Iterator[pwd.struct_passwd]:
    """Create ``<prefix>-<pid>`` with its own group and ``home`` (made, owned by it).

    The pid suffix keeps concurrent test sessions from sharing (and deleting)
    each other's users.
    """
    _remove_leftovers(prefix)
    name = f"{prefix}-{os.getpid()}"
    subprocess.run(["useradd", "-U", "-M", "-d", str(home), "-s", "/bin/sh", name], check=True)
    try:
        user = pwd.getpwnam(name)
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, user.pw_uid, user.pw_gid)
        yield user
    finally:
        subprocess.run(["userdel", "-f", name], check=True)


@contextlib.contextmanager
def world_dir(prefix: str = "fluximp-test-") -> Iterator[Path]:
    """A fresh 0755 temp dir (ours: root's, under root) that every user can
    reach and read; pytest's tmp_path lies under a 0700 directory."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path)


def with_ids(uid: int, gid: int, groups: list[int]) -> Callable[[], None]:
    """A preexec_fn: become ``uid``/``gid`` with supplementary ``groups``, for good."""

    def drop() -> None:
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    return drop


def become(user: pwd.struct_passwd) -> Callable[[], None]:
    """A preexec_fn that drops a child to ``user`` (no supplementary groups) for good."""
    return with_ids(user.pw_uid, user.pw_gid, [])


def output_as(drop: Callable[[], None], produce: Callable[[], bytes]) -> bytes:
    """What ``produce()`` returns in a forked child that ran ``drop()`` first
    (e.g. become()); the child's failure fails the caller."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(rfd)
            drop()
            data = produce()
            with os.fdopen(wfd, "wb") as pipe:
                pipe.write(data)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as pipe:
        data = pipe.read()
    assert os.waitpid(pid, 0)[1] == 0, "the child failed (its traceback is above)"
    return data
