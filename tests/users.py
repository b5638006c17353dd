"""Real, temporary Unix users for tests and the demo (created with useradd)."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
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


def become(user: pwd.struct_passwd) -> Callable[[], None]:
    """A preexec_fn that drops a child to ``user`` for good."""

    def drop() -> None:
        os.setgroups([])
        os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
        os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)

    return drop
