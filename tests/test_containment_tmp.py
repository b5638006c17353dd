"""A private /tmp and /dev/shm per job (``[exec.private-tmp]``,
namespaces.py), end to end as root through the setuid test build."""

from __future__ import annotations

import os
import pwd
import secrets
import signal
from pathlib import Path

import pytest

from .containment_helpers import make_setup, outcome, start
from .impenv import ImpInstall
from .jobs import ExecSetup, finish, ready_line, running

# Writes a file in each private directory, prints its pid, the inode of
# its mount namespace and what it sees, then waits to be killed.
SCRIPT = """\
touch /tmp/{name} /dev/shm/{name} || exit 9
echo $$ $(stat -L -c %i /proc/self/ns/mnt) $(ls /tmp | wc -l)
exec sleep 1000
"""


@pytest.fixture
def setup(imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
          world_tmp: Path) -> ExecSetup:
    return make_setup(imp.test_build, munged, owner, guest, world_tmp,
                      '[exec.private-tmp]\nsize = "16m"\n')


def namespace_in_use(inode: int) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/mnt").st_ino == inode:
                return True
        except OSError:
            continue
    return False


def test_private_tmp_is_invisible_to_the_host_and_gone_after_the_job(
    setup: ExecSetup, world_tmp: Path
) -> None:
    name = f"fluximp-private-{secrets.token_hex(4)}"
    proc = start(setup, SCRIPT.format(name=name), world_tmp, jobid=None)
    with running(proc):
        shell, inode, entries = ready_line(proc)
        assert entries == 1  # only its own file: a fresh, empty /tmp
        assert inode != os.stat("/proc/self/ns/mnt").st_ino
        assert not os.path.exists(f"/tmp/{name}")
        assert not os.path.exists(f"/dev/shm/{name}")
        mounts = Path(f"/proc/{shell}/mounts").read_text().splitlines()
        assert any(line.split()[1:3] == ["/tmp", "tmpfs"] and "size=16384k" in line
                   for line in mounts)
        assert any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts)
        os.kill(proc.pid, signal.SIGUSR1)
        assert finish(proc) == (-signal.SIGKILL, "")
    # The tmpfs lived in the job's namespace, which died with the job.
    assert not namespace_in_use(inode)
    assert not os.path.exists(f"/tmp/{name}")


def test_invalid_size_is_refused(imp: ImpInstall, munged: str, owner: pwd.struct_passwd,
                                 guest: pwd.struct_passwd, world_tmp: Path) -> None:
    setup = make_setup(imp.test_build, munged, owner, guest, world_tmp,
                       '[exec.private-tmp]\nsize = "1g,mode=0777"\n')
    assert outcome(start(setup, "echo ran", world_tmp, jobid=None)) == (
        1, "", "flux-imp: Fatal: exec: private-tmp: invalid size\n")
