"""Real, temporary Unix users for tests and the demo (created with useradd)."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def temp_user(name: str, home: Path) -> Iterator[pwd.struct_passwd]:
    """Create ``name`` with its own group and ``home`` (made, owned by it)."""
    subprocess.run(["userdel", "-f", name], capture_output=True, check=False)  # a crash's leftover
    subprocess.run(["groupdel", name], capture_output=True, check=False)
    subprocess.run(["useradd", "-U", "-M", "-d", str(home), "-s", "/bin/sh", name], check=True)
    try:
        user = pwd.getpwnam(name)
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, user.pw_uid, user.pw_gid)
        yield user
    finally:
        subprocess.run(["userdel", "-f", name], check=True)


def become(user: pwd.struct_passwd) -> Callable[[], None]:
    """A preexec_fn that drops a child to ``user`` for good."""

    def drop() -> None:
        os.setgroups([])
        os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
        os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)

    return drop
