"""Shared set-up of the containment tests (issue 5): an IMP config with
extra ``[exec...]`` keys, a dedicated test cgroup, the JSON input with
``options`` handed over through FLUX_IMP_EXEC_HELPER, and a private mount
namespace for the IMP (to put a test PAM stack at /etc/pam.d)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import impenv, users
from .jobs import (
    CONFIG,
    SHELL,
    TIMEOUT,
    ExecSetup,
    cgroup2_mount,
    child_cgroup,
    running,
    sign_as,
    start_exec,
)  # fmt: skip

CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 0x1000, 0x4000, 0x40000


# Like flux-shell, the job shell takes the job id (ARG) first: here it is
# dropped and the rest goes to sh.
JOB_SHELL = '#!/bin/sh\nshift\nexec /bin/sh "$@"\n'
JOBID = "4242"


def make_setup(imp: Path, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
               directory: Path, extra: str = "") -> ExecSetup:
    """An ExecSetup whose config ends with ``extra`` (more ``[exec...]`` keys)
    and allows job_shell(setup) and /bin/sh."""
    shell = directory / "job-shell"
    shell.write_text(JOB_SHELL)
    os.chmod(shell, 0o755)
    text = CONFIG.format(socket=munged, owner=owner.pw_name,
                         shells=json.dumps([SHELL, str(shell)]))
    pattern = impenv.write_config(directory / "conf.d", text + extra)
    return ExecSetup(imp, pattern, owner, guest)


def job_shell(setup: ExecSetup) -> str:
    return str(Path(setup.pattern).parent.parent / "job-shell")


def start(setup: ExecSetup, script: str, tmp: Path, *, cgroup: Path | None = None,
          opts: Any = None, jobid: str | None = JOBID,
          binds: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``flux-imp exec JOB-SHELL JOBID -c SCRIPT`` as the owner, in ``cgroup``;
    ``flux-imp exec /bin/sh -c SCRIPT`` if ``jobid`` is None (a job shell
    under /tmp would be hidden by a private /tmp)."""
    env = helper_input(setup, tmp, opts)
    shell, args = (SHELL, ["-c", script]) if jobid is None else (
        job_shell(setup), [jobid, "-c", script])
    return start_exec(setup, args, env=env, shell=shell,
                      preexec=preexec(setup.owner, cgroup=cgroup, binds=binds))


def outcome(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of an IMP run that ends by itself."""
    with running(proc):
        out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out.decode(), err.decode()


def helper_input(setup: ExecSetup, directory: Path, options: Any = None) -> dict[str, str]:
    """Env that makes the IMP read J (fresh, signed by the guest) and
    ``options`` from a file, through a FLUX_IMP_EXEC_HELPER ``cat``."""
    data: dict[str, Any] = {"J": sign_as(setup.guest, setup.pattern)}
    if options is not None:
        data["options"] = options
    path = directory / f"input-{secrets.token_hex(4)}.json"
    path.write_text(json.dumps(data))
    os.chmod(path, 0o644)
    return {"FLUX_IMP_EXEC_HELPER": f"/bin/cat {path}"}


def procs(cgroup: Path) -> list[int]:
    return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]


def dedicated_cgroup() -> contextlib.AbstractContextManager[Path]:
    """A fresh child cgroup of the cgroup2 root (never the root itself);
    everything in it and below is killed and removed afterwards."""
    return child_cgroup("fluximp-test-")


def preexec(user: pwd.struct_passwd, *, cgroup: Path | None = None,
            binds: dict[str, str] | None = None) -> Callable[[], None]:
    """A preexec_fn, as root: move into ``cgroup``; enter a private mount
    namespace with each ``binds`` source mounted over its target; then
    become ``user``."""
    become = users.become(user)

    def run() -> None:
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text("0")
        if binds:
            libc = ctypes.CDLL(None, use_errno=True)

            def check(rc: int) -> None:
                if rc != 0:
                    raise OSError(ctypes.get_errno(), "private mounts")

            check(libc.unshare(CLONE_NEWNS))
            check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
            for source, target in binds.items():
                check(libc.mount(source.encode(), target.encode(), None, MS_BIND, None))
        become()

    return run


def job_cgroup_of(pid: int) -> Path:
    """Where ``pid`` is in the cgroup2 hierarchy."""
    mount = cgroup2_mount()
    assert mount is not None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return Path(str(mount) + line[3:])
    raise AssertionError("no cgroup2 line")
