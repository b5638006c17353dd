"""Benchmark (not a test): flux-imp start-up, the lingering parent's memory and concurrency.

Run as root from a checkout (it may be in a 0700 directory)::

    /opt/flux-imp-dev/venv/bin/python bench/bench_imp.py [--runs N] [--jobs N]

Builds and installs the setuid test launcher from this tree (tests/impenv,
which byte-compiles it as a package install would), creates two temporary
users, a private munged and a curve CA, then, in one run:

* times, as the owner, interleaved round by round: the floor
  (``python3 -I -S -c pass`` with the interpreter the launcher starts),
  ``flux-imp version``, ``flux-imp whoami``, ``flux-imp exec /bin/true 1``
  with J signed by the guest with munge and curve (CA mode) and by the
  owner with none (valid only for the real uid), and
  ``flux-imp run bench`` (a trivial script); each as median, p90 and the
  ratio of its median to the floor's, against its target;
* samples Private_Dirty and Pss of the lingering privileged parent of a
  running job, per mechanism, by default and with ``[exec.cgroup]``;
* starts ``--jobs`` guest jobs at once and times them all.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import pkgutil
import pwd
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flux_imp.conf
import flux_imp.sign
from flux_imp.sign import DISABLE_PATH_PARANOIA, Context, wrap
from tests import impenv, munged, users
from tests.jobs import (
    SHELL,
    SLEEPER,
    TIMEOUT,
    ExecSetup,
    cgroup2_mount,
    in_cgroup,
    ready_line,
    remove_cgroup,
    running,
    start_exec,
)
from tests.signconf import ca_mode, sign_table

# The whole signing library (and the config code it uses), loaded now: it
# imports its parts on first use, in the forked children that become the
# guest to sign, and they cannot read a checkout in a 0700 directory.
for _package in (flux_imp.sign, flux_imp.conf):
    for _module in pkgutil.iter_modules(_package.__path__, f"{_package.__name__}."):
        if not _module.name.endswith(".__main__"):
            importlib.import_module(_module.name)

TRUE = "/bin/true"
WARMUP = 3  # rounds, not counted
MECHANISMS = ("none", "munge", "curve")
FLOOR = "python3 -I -S -c pass"
RUN_NAME = "bench"
# Median over the floor's median.
TARGET_RATIO = {
    "flux-imp version": 1.25,
    "flux-imp whoami": 1.25,
    "flux-imp exec (none)": 1.5,
    "flux-imp exec (munge)": 1.5,
    "flux-imp exec (curve)": 1.6,
    f"flux-imp run {RUN_NAME}": 1.5,
}
TARGET_DIRTY_KIB = 1024
CONCURRENT_MECHANISM = "munge"
# Like flux-shell, the job shell takes the job id first ([exec.cgroup]
# names the job's cgroup after it); the rest goes to sh.
JOB_SHELL = '#!/bin/sh\nshift\nexec /bin/sh "$@"\n'
JOBID = "4242"
RUN_SCRIPT = "#!/bin/sh\nexit 0\n"

Launch = Callable[[], "subprocess.Popen[bytes]"]


@dataclass(frozen=True)
class Bench:
    imp: Path  # the setuid test launcher
    owner: pwd.struct_passwd
    guest: pwd.struct_passwd
    patterns: dict[tuple[str, bool], str]  # (mechanism, [exec.cgroup]) -> config glob
    job_shell: str

    def setup(self, mechanism: str, cgroup: bool = False) -> ExecSetup:
        return ExecSetup(self.imp, self.patterns[mechanism, cgroup], self.owner, self.guest)

    def signer(self, mechanism: str) -> pwd.struct_passwd:
        """Who signs J: the guest, but for ``none`` the owner (a ``none`` J
        is valid only for the real uid that verifies it: a guest's is refused)."""
        return self.owner if mechanism == "none" else self.guest


# -- set-up ----------------------------------------------------------------------


def write_file(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def config_text(mechanism: str, signing: str, owner: pwd.struct_passwd, shells: list[str],
                run_script: Path, cgroup: bool) -> str:
    """One config for the IMP and the signer: J signed with ``mechanism``
    only, ``owner`` may exec ``shells`` and run RUN_NAME."""
    return (sign_table(mechanism) + signing
            + impenv.toml_table(f"run.{RUN_NAME}", {"allowed-users": [owner.pw_name],
                                                    "path": str(run_script)})
            + impenv.toml_table("exec", {"allowed-users": [owner.pw_name],
                                         "allowed-shells": shells})
            + ("[exec.cgroup]\n" if cgroup else ""))  # fmt: skip


@contextmanager
def environment(workdir: Path) -> Iterator[Bench]:
    """Users, munged, a CA, the installed launchers and a config per
    mechanism, with and without [exec.cgroup]."""
    with ExitStack() as stack:
        owner = stack.enter_context(users.temp_user("fluximp-bench-owner", workdir / "o"))
        guest = stack.enter_context(users.temp_user("fluximp-bench-guest", workdir / "g"))
        socket = stack.enter_context(munged.running_munged())
        # Only root and the two users can reach the setuid builds.
        gate = stack.enter_context(impenv.gate(owner.pw_uid, guest.pw_uid))
        prefix = stack.enter_context(impenv.gated_dir(gate, "fluximp-install-"))
        install = impenv.build(prefix, gate)  # byte-compiled, as a package install is
        bindir = workdir / "bin"
        bindir.mkdir(mode=0o755)
        job_shell = write_file(bindir / "job-shell", JOB_SHELL, 0o755)
        run_script = write_file(bindir / "bench-run", RUN_SCRIPT, 0o755)
        (workdir / "ca").mkdir(mode=0o755)
        signing = {
            "none": "",
            "munge": f'[sign.munge]\nsocket-path = "{socket}"\n',
            # max-cert-ttl: the default, 60 s, is too short for a bench
            "curve": ca_mode(workdir / "ca", guest, **{"max-cert-ttl": 24 * 3600}),
        }
        shells = [TRUE, SHELL, str(job_shell)]
        patterns = {}
        for mechanism in MECHANISMS:
            for cgroup in (False, True):
                text = config_text(mechanism, signing[mechanism], owner, shells, run_script,
                                   cgroup)  # fmt: skip
                confdir = workdir / f"conf-{mechanism}{'-cgroup' if cgroup else ''}"
                patterns[mechanism, cgroup] = impenv.write_config(confdir, text)
        yield Bench(install.test_build, owner, guest, patterns, str(job_shell))


# -- measuring -------------------------------------------------------------------


def sign_tokens(user: pwd.struct_passwd, pattern: str, count: int) -> list[str]:
    """``count`` J signed by ``user``, in one forked child that becomes
    ``user`` (the signing modules are already imported)."""

    def sign() -> bytes:
        ctx = Context(DISABLE_PATH_PARANOIA)
        ctx.configure(pattern)
        return "\n".join(wrap(ctx, b"{}") for _ in range(count)).encode()

    return users.output_as(users.become(user), sign).decode().split("\n")


def as_owner(setup: ExecSetup, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd="/", preexec_fn=users.become(setup.owner),
        env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": setup.pattern},
    )  # fmt: skip


def exec_true(setup: ExecSetup, token: str) -> subprocess.Popen[bytes]:
    """``flux-imp exec /bin/true 1`` as the owner, ``token`` on stdin."""
    return start_exec(setup, ["1"], shell=TRUE, token=token, stdout=subprocess.DEVNULL)


def elapsed_ms(launch: Launch) -> float:
    """Wall time from spawn to reaping; exits the benchmark on failure."""
    start = time.perf_counter()
    with launch() as proc:
        _, err = proc.communicate(timeout=TIMEOUT)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        sys.exit(f"{proc.args!r} exited {proc.returncode}: {err.decode(errors='replace')}")
    return elapsed


def measure_starts(bench: Bench, runs: int) -> dict[str, list[float]]:
    """ms per command, the floor first, in timed_rounds()."""
    python = os.path.realpath(sys.executable)  # the launcher's interpreter (impenv)
    munge = bench.setup("munge")
    imp = str(bench.imp)
    simple: dict[str, Launch] = {
        FLOOR: functools.partial(as_owner, munge, [python, "-I", "-S", "-c", "pass"]),
        "flux-imp version": functools.partial(as_owner, munge, [imp, "version"]),
        "flux-imp whoami": functools.partial(as_owner, munge, [imp, "whoami"]),
        f"flux-imp run {RUN_NAME}": functools.partial(as_owner, munge, [imp, "run", RUN_NAME]),
    }

    def launches() -> dict[str, Launch]:
        found = dict(simple)
        for mechanism in MECHANISMS:
            setup = bench.setup(mechanism)
            token = sign_tokens(bench.signer(mechanism), setup.pattern, 1)[0]
            found[f"flux-imp exec ({mechanism})"] = functools.partial(exec_true, setup, token)
        return found

    return timed_rounds([*simple, *(f"flux-imp exec ({m})" for m in MECHANISMS)], runs, launches)


def timed_rounds(names: list[str], runs: int,
                 launches: Callable[[], dict[str, Launch]]) -> dict[str, list[float]]:
    """ms per name: every round runs each once, in an order rotated by one
    each round, after WARMUP uncounted rounds; ``launches()`` gives a
    round's launches before it (J signed then, not timed)."""
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(WARMUP + runs):
        found = launches()
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            took = elapsed_ms(found[name])
            if i >= WARMUP:
                times[name].append(took)
    return times


def smaps_rollup(pid: int) -> dict[str, int]:
    """The kB figures of /proc/PID/smaps_rollup."""
    found = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 3 and fields[2] == "kB":
                found[fields[0].rstrip(":")] = int(fields[1])
    return found


def measure_lingering(bench: Bench, mechanism: str, cgroup: Path | None) -> dict[str, int]:
    """smaps_rollup of the privileged parent while its job shell sleeps
    (``flux-imp exec JOB-SHELL JOBID -c SLEEPER``, the IMP started in
    ``cgroup`` with [exec.cgroup] if given)."""
    setup = bench.setup(mechanism, cgroup is not None)
    drop = users.become(bench.owner) if cgroup is None else in_cgroup(cgroup, bench.owner)
    token = sign_tokens(bench.signer(mechanism), setup.pattern, 1)[0]
    proc = start_exec(setup, [JOBID, "-c", SLEEPER], shell=bench.job_shell, preexec=drop,
                      token=token)
    with running(proc):
        shell, parent = ready_line(proc)
        if parent != proc.pid:
            sys.exit(f"the job shell's parent is {parent}, not the IMP ({proc.pid})")
        if cgroup is not None:
            with open(f"/proc/{shell}/cgroup") as f:
                where = next(line for line in f if line.startswith("0::")).strip()
            if not where.endswith(f"/{cgroup.name}/imp-shell-{JOBID}"):
                sys.exit(f"the job shell is not in its own cgroup under {cgroup}: {where}")
        found = smaps_rollup(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)  # the IMP passes it on to the job
        proc.communicate(timeout=TIMEOUT)
    return found


@contextmanager
def bench_cgroup() -> Iterator[Path]:
    """A fresh child cgroup of the cgroup2 root; everything in it and below
    is killed and removed after.  OSError if there is none to be had."""
    mount = cgroup2_mount()
    if mount is None:
        raise OSError("no cgroup2 mount in /proc/self/mounts")
    path = mount / f"fluximp-bench-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path
    finally:
        remove_cgroup(path)


def measure_memory(bench: Bench) -> tuple[dict[tuple[str, bool], dict[str, int]], str | None]:
    """smaps_rollup per (mechanism, with [exec.cgroup]); why the cgroup rows
    are missing, if they are."""
    found = {(m, False): measure_lingering(bench, m, None) for m in MECHANISMS}
    try:
        with bench_cgroup() as cgroup:
            for mechanism in MECHANISMS:
                found[mechanism, True] = measure_lingering(bench, mechanism, cgroup)
    except OSError as exc:
        return found, f"[exec.cgroup] not measured: {exc}"
    return found, None


def measure_concurrency(bench: Bench, jobs: int) -> tuple[float, list[str]]:
    """Wall seconds from the first spawn to the last reaping of ``jobs``
    ``flux-imp exec /bin/true 1`` spawned back to back (J signed before);
    the failures."""
    setup = bench.setup(CONCURRENT_MECHANISM)
    tokens = sign_tokens(bench.guest, setup.pattern, jobs)
    failures = []
    with ExitStack() as stack:
        start = time.perf_counter()
        procs = [stack.enter_context(running(exec_true(setup, token))) for token in tokens]
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                failures.append(f"pid {proc.pid}: still running after {TIMEOUT:.0f} s")
                continue
            if proc.returncode != 0:
                failures.append(f"exit {proc.returncode}: {err.decode(errors='replace').strip()}")
        wall = time.perf_counter() - start
    return wall, failures


# -- report ----------------------------------------------------------------------


def summary(times: list[float]) -> tuple[float, float]:
    """(median, p90)."""
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def table_head(times: dict[str, list[float]], runs: int, how: str, width: int) -> float:
    """Print a timing table's title, header and floor row; the floor's median."""
    floor, floor_p90 = summary(times[FLOOR])
    print(f"{runs} runs each after {WARMUP} warm-up rounds, interleaved, as the owner {how}"
          "(wall time, spawn to reaping)")
    print(f"  {'command':<{width}} {'median':>9} {'p90':>9} {'x floor':>8}  target")
    print(f"  {FLOOR:<{width}} {floor:6.1f} ms {floor_p90:6.1f} ms {1:7.2f}x  (the floor)")
    return floor


def report_starts(times: dict[str, list[float]], runs: int) -> None:
    print("start-up: ", end="")
    floor = table_head(times, runs, "through the setuid test launcher ", 30)
    for name, target in TARGET_RATIO.items():
        median, p90 = summary(times[name])
        ratio = median / floor
        print(f"  {name:<30} {median:6.1f} ms {p90:6.1f} ms {ratio:7.2f}x  "
              f"<= {target:.2f}x: {verdict(ratio <= target)}")


def report_memory(found: dict[tuple[str, bool], dict[str, int]], missing: str | None) -> None:
    print("lingering privileged parent of a running job (/proc/PID/smaps_rollup)")
    print(f"  {'mechanism':<10} {'config':<15} {'Private_Dirty':>13} {'Pss':>9} {'Rss':>9}  "
          "target")
    for (mechanism, cgroup), kib in found.items():
        dirty = kib["Private_Dirty"]
        config = "[exec.cgroup]" if cgroup else "default"
        pss, rss = kib["Pss"] / 1024, kib["Rss"] / 1024
        print(f"  {mechanism:<10} {config:<15} {dirty / 1024:9.2f} MiB {pss:5.2f} MiB "
              f"{rss:5.2f} MiB  Private_Dirty <= {TARGET_DIRTY_KIB // 1024} MiB: "
              f"{verdict(dirty <= TARGET_DIRTY_KIB)}")
    if missing:
        print(f"  {missing}")


def report_concurrency(jobs: int, wall: float, failures: list[str]) -> None:
    done = jobs - len(failures)
    print(f"concurrency: {jobs} guest jobs (flux-imp exec /bin/true 1, {CONCURRENT_MECHANISM}) "
          f"started at once through the setuid IMP, on {os.cpu_count()} CPUs")
    print(f"  {done}/{jobs} succeeded, wall {wall * 1000:.0f} ms, {jobs / wall:.1f} jobs/s  "
          f"(target: all succeed: {'ok' if not failures else 'FAILED'})")
    for failure in failures[:5]:
        print(f"  {failure}")


@contextmanager
def bench_workdir(prefix: str) -> Iterator[Path]:
    """As root only: a new directory the temporary users can reach (their
    homes and the configs are made in it), removed afterwards."""
    if os.getuid() != 0:
        sys.exit("run as root: it installs setuid launchers and creates users")
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(workdir, 0o755)  # noqa: S103 - the users' homes and config live here
        yield workdir
    finally:
        shutil.rmtree(workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", "-n", type=int, default=30, help="timed runs per command")
    parser.add_argument("--jobs", "-j", type=int, default=64, help="concurrent jobs")
    args = parser.parse_args()
    if args.runs < 2:
        sys.exit("--runs must be at least 2")
    if args.jobs < 1:
        sys.exit("--jobs must be at least 1")
    with bench_workdir("fluximp-bench-") as workdir, environment(workdir) as bench:
        times = measure_starts(bench, args.runs)
        memory = measure_memory(bench)
        wall, failures = measure_concurrency(bench, args.jobs)
    print(f"floor: {FLOOR} with {os.path.realpath(sys.executable)}, the launcher's interpreter")
    report_starts(times, args.runs)
    report_memory(*memory)
    report_concurrency(args.jobs, wall, failures)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
