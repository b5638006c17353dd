"""The job's own cgroup (``[exec.cgroup]``, jobcgroup.py), end to end as
root through the setuid test build, inside a dedicated test cgroup."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_imp.imp import options
from flux_imp.imp.options import OptionsError
from flux_imp.imp.privileged.contain import cgroup as jobcgroup
from flux_imp.sign.kv import KV

from .containment_helpers import (
    JOBID,
    dedicated_cgroup,
    job_cgroup_of,
    make_setup,
    outcome,
    procs,
    start,
)  # fmt: skip
from .impenv import ImpInstall
from .jobs import ESCAPER, ExecSetup, alive, finish, ready_line, running


@pytest.fixture
def test_cgroup() -> Iterator[Path]:
    with dedicated_cgroup() as path:
        yield path


def setup_with(imp: ImpInstall, munged: str, owner: pwd.struct_passwd,
               guest: pwd.struct_passwd, tmp: Path, extra: str) -> ExecSetup:
    return make_setup(imp.test_build, munged, owner, guest, tmp, extra)


@pytest.fixture
def parent_setup(imp: ImpInstall, munged: str, owner: pwd.struct_passwd,
                 guest: pwd.struct_passwd, world_tmp: Path, test_cgroup: Path) -> ExecSetup:
    """Job cgroups under a configured parent: ``<test cgroup>/jobs``."""
    (test_cgroup / "jobs").mkdir()
    extra = f'[exec.cgroup]\nparent = "{test_cgroup / "jobs"}"\n'
    return setup_with(imp, munged, owner, guest, world_tmp, extra)


def subcgroups(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.is_dir()]


def escaped(pid: int, shell: int) -> bool:
    """Wait until ``pid`` (started by ``setsid``) has left ``shell``'s session."""
    deadline = time.monotonic() + 5
    while os.getsid(pid) == os.getsid(shell) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getsid(pid) != os.getsid(shell)


def test_shell_runs_in_its_own_cgroup_and_sigusr1_kills_an_escaped_grandchild(
    parent_setup: ExecSetup, test_cgroup: Path, world_tmp: Path
) -> None:
    proc = start(parent_setup, ESCAPER, world_tmp, cgroup=test_cgroup)
    with running(proc):
        shell, grandchild = ready_line(proc)
        job = test_cgroup / "jobs" / f"imp-shell-{JOBID}"
        assert job_cgroup_of(shell) == job
        assert job_cgroup_of(grandchild) == job
        assert job_cgroup_of(proc.pid) == test_cgroup  # the IMP stays outside
        assert escaped(grandchild, shell)
        os.kill(proc.pid, signal.SIGUSR1)
        assert finish(proc) == (-signal.SIGKILL, "")
    assert not alive(shell)
    assert not alive(grandchild)
    assert not job.exists()


def test_imp_waits_for_the_job_cgroup_then_removes_it(
    parent_setup: ExecSetup, test_cgroup: Path, world_tmp: Path
) -> None:
    proc = start(parent_setup, ESCAPER, world_tmp, cgroup=test_cgroup)
    with running(proc):
        _, grandchild = ready_line(proc)
        os.kill(proc.pid, signal.SIGTERM)  # the shell dies, the grandchild lingers
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.3)
        assert alive(grandchild)
        assert (test_cgroup / "jobs" / f"imp-shell-{JOBID}").exists()
        os.kill(proc.pid, signal.SIGUSR1)
        assert finish(proc) == (-signal.SIGTERM, "")
    assert not alive(grandchild)
    assert subcgroups(test_cgroup / "jobs") == []


def test_default_parent_is_the_imps_own_cgroup(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, test_cgroup: Path,
) -> None:  # fmt: skip
    setup = setup_with(imp, munged, owner, guest, world_tmp, "[exec.cgroup]\n")
    code, out, err = outcome(start(setup, "grep ^0:: /proc/self/cgroup; exit 5", world_tmp,
                                   cgroup=test_cgroup))
    assert (code, err) == (5, "")
    mount = jobcgroup.cgroup2_mount(str(test_cgroup))
    assert mount is not None
    assert out == f"0::{str(test_cgroup)[len(mount):]}/imp-shell-{JOBID}\n"
    assert procs(test_cgroup) == []
    assert not (test_cgroup / f"imp-shell-{JOBID}").exists()


@pytest.mark.parametrize("jobid", ["..", "a/b", "-x", "x" * 201])
def test_job_id_that_cannot_name_a_cgroup(parent_setup: ExecSetup, test_cgroup: Path,
                                          world_tmp: Path, jobid: str) -> None:
    code, out, err = outcome(start(parent_setup, "echo ran", world_tmp, cgroup=test_cgroup,
                                   jobid=jobid))
    assert (code, out) == (1, "")
    assert err == f"flux-imp: Fatal: exec: cgroup: job id '{jobid}' cannot name a cgroup\n"


def test_existing_cgroup_is_never_adopted(parent_setup: ExecSetup, test_cgroup: Path,
                                          world_tmp: Path) -> None:
    (test_cgroup / "jobs" / f"imp-shell-{JOBID}").mkdir()
    code, out, err = outcome(start(parent_setup, "echo ran", world_tmp, cgroup=test_cgroup))
    assert (code, out) == (1, "")
    assert err.endswith(f"imp-shell-{JOBID}: File exists\n")


# -- resource limits -------------------------------------------------------

LIMITS = [("MemoryMax", 64 << 20, "memory.max", str(64 << 20)),
          ("TasksMax", 50, "pids.max", "50"),
          ("CPUQuotaPerSecUSec", 500_000, "cpu.max", "50000 100000")]


@pytest.mark.parametrize(("name", "value", "file", "expected"), LIMITS)
def test_limit_is_applied_or_fails_closed(
    parent_setup: ExecSetup, test_cgroup: Path, world_tmp: Path,
    name: str, value: int, file: str, expected: str,
) -> None:  # fmt: skip
    controller = file.split(".")[0]
    available = controller in (test_cgroup / "cgroup.controllers").read_text().split()
    if available:
        # The parent of the job cgroups must be able to hand the controller on.
        (test_cgroup / "cgroup.subtree_control").write_text(f"+{controller}")
    job = test_cgroup / "jobs" / f"imp-shell-{JOBID}"
    code, out, err = outcome(start(parent_setup, f"cat {job}/{file}", world_tmp,
                                   cgroup=test_cgroup, opts={name: value}))
    if available:
        assert (code, out, err) == (0, expected + "\n", "")
    else:
        print(f"cgroup2 controller {controller} unavailable here: testing that {name} "
              "fails closed")
        assert (code, out) == (1, "")
        assert err == (
            f"flux-imp: Fatal: exec: cgroup: controller {controller} is not available in "
            f"{test_cgroup / 'jobs'}, cannot apply the requested limit\n")
        assert subcgroups(test_cgroup / "jobs") == []


@pytest.mark.parametrize("value", [-1, "lots", "", True, 1.5, None, [1], {}])
def test_malformed_limit_is_rejected(parent_setup: ExecSetup, test_cgroup: Path,
                                     world_tmp: Path, value: Any) -> None:
    code, out, err = outcome(start(parent_setup, "echo ran", world_tmp, cgroup=test_cgroup,
                                   opts={"MemoryMax": value}))
    assert (code, out) == (1, "")
    assert err == "flux-imp: Fatal: exec: failed to parse resource limits: Invalid argument\n"


def test_limits_without_a_cgroup_table_are_ignored_as_upstream(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, test_cgroup: Path,
) -> None:  # fmt: skip
    setup = setup_with(imp, munged, owner, guest, world_tmp, "")
    assert outcome(start(setup, "echo ran", world_tmp, cgroup=test_cgroup,
                         opts={"MemoryMax": 1 << 30})) == (0, "ran\n", "")


# -- units -----------------------------------------------------------------


def test_limit_values() -> None:
    assert jobcgroup.limit_values({"MemoryMax": None, "TasksMax": 7,
                                   "CPUQuotaPerSecUSec": 2_000_000}) == {
        "memory.max": "max", "pids.max": "7", "cpu.max": "200000 100000"}
    assert jobcgroup.cpu_max(1) == "1000 100000"  # the kernel's minimum quota
    assert jobcgroup.cpu_max(None) == "max 100000"


def test_limits_round_trip_through_the_privsep_message() -> None:
    limits = options.limits_from_options(
        {"MemoryMax": "infinity", "TasksMax": 2**64 - 1, "CPUQuotaPerSecUSec": 0, "X": 1})
    assert limits == {"MemoryMax": None, "TasksMax": None, "CPUQuotaPerSecUSec": 0}
    kv = KV()
    options.encode_limits(limits, kv)
    assert options.decode_limits(kv) == limits


@pytest.mark.parametrize("value", ["-1", "1e3", "", "0x10", "١"])
def test_privsep_limits_are_decoded_strictly(value: str) -> None:
    kv = KV()
    kv.put_str("limit.TasksMax", value)
    with pytest.raises(OptionsError):
        options.decode_limits(kv)
    kv = KV()
    kv.put_str("limit.Unknown", "1")
    with pytest.raises(OptionsError):
        options.decode_limits(kv)


def test_root_cgroup_is_recognised() -> None:
    mount = jobcgroup.cgroup2_mount(str(job_cgroup_of(os.getpid())))
    assert mount is not None
    assert jobcgroup.is_root(mount)
    assert jobcgroup.is_root(mount + "/")
    with dedicated_cgroup() as path:
        assert not jobcgroup.is_root(str(path))


def test_sigusr1_falls_back_to_cgroup_procs_without_cgroup_kill(tmp_path: Path) -> None:
    """Before Linux 5.14 there is no cgroup.kill: one pass over cgroup.procs
    (here a directory standing in for the cgroup, which has no cgroup.kill)."""
    sleeper = subprocess.Popen(["sleep", "100"])
    try:
        (tmp_path / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        jobcgroup.JobCgroup(str(tmp_path)).kill()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not (tmp_path / "cgroup.kill").exists()  # never created
    finally:
        sleeper.kill()
        sleeper.wait()


def test_interface_files_are_never_created(test_cgroup: Path) -> None:
    """A missing interface file is ENOENT, not cgroupfs's EACCES for a create."""
    with pytest.raises(FileNotFoundError):
        jobcgroup._write(str(test_cgroup / "cgroup.no-such-file"), "1")
