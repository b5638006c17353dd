"""Benchmark (not a test): flux-imp start-up cost and the lingering IMP's memory.

Run as root from anywhere::

    /opt/flux-imp-dev/venv/bin/python bench/bench_imp.py [--runs N]

Builds and installs the setuid test launcher from this tree (tests/impenv,
which byte-compiles it as a package install would), creates two temporary users
and a private munged, then times, as the owner: ``python3 -I -S -c pass``
(the floor: the interpreter the launcher starts), ``flux-imp version`` and
``flux-imp exec /bin/true 1`` with a munge-signed J on stdin (signed before
the clock starts).  Finally it samples the lingering privileged IMP while a
``sleep`` job shell runs.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import impenv, munged, users
from tests.jobs import (
    SHELL,
    SLEEPER,
    TIMEOUT,
    ExecSetup,
    ready_line,
    sign_as,
    start_exec,
    write_exec_config,
)

TRUE = "/bin/true"
TARGET_MS = {"version": 15.0, "exec": 40.0}  # median
TARGET_DIRTY_KIB = 6 * 1024
WARMUP = 3


def elapsed_ms(launch: Callable[[], subprocess.Popen[bytes]]) -> float:
    """Wall time from spawn to reaping; exits the benchmark on failure."""
    start = time.perf_counter()
    with launch() as proc:
        _, err = proc.communicate(timeout=TIMEOUT)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        sys.exit(f"{proc.args!r} exited {proc.returncode}: {err.decode(errors='replace')}")
    return elapsed


def as_owner(setup: ExecSetup, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd="/", preexec_fn=users.become(setup.owner),
        env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": setup.pattern},
    )  # fmt: skip


def measure_simple(setup: ExecSetup, argv: list[str], runs: int) -> list[float]:
    launch = functools.partial(as_owner, setup, argv)
    return [elapsed_ms(launch) for _ in range(WARMUP + runs)][WARMUP:]


def measure_exec(setup: ExecSetup, runs: int) -> list[float]:
    times = []
    for _ in range(WARMUP + runs):
        token = sign_as(setup.guest, setup.pattern)  # not timed
        times.append(elapsed_ms(functools.partial(
            start_exec, setup, ["1"], shell=TRUE, token=token, stdout=subprocess.DEVNULL)))
    return times[WARMUP:]


def proc_kib(path: str, key: str) -> int:
    with open(path) as f:
        return int(next(line for line in f if line.startswith(f"{key}:")).split()[1])


def measure_lingering(setup: ExecSetup) -> dict[str, int]:
    """kB figures of the privileged IMP while its job shell sleeps."""
    with start_exec(setup, ["-c", SLEEPER]) as proc:
        ready_line(proc)
        pid = proc.pid
        found = {
            "peak RSS": proc_kib(f"/proc/{pid}/status", "VmHWM"),
            "RSS": proc_kib(f"/proc/{pid}/status", "VmRSS"),
            "Private_Dirty": proc_kib(f"/proc/{pid}/smaps_rollup", "Private_Dirty"),
        }
        os.kill(pid, signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT)
    return found


def summary(times: list[float]) -> tuple[float, float]:
    """(median, p90) in ms."""
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


@contextmanager
def environment(workdir: Path) -> Iterator[ExecSetup]:
    """Users, munged, the installed launchers and an exec config."""
    with ExitStack() as stack:
        owner = stack.enter_context(users.temp_user("fluximp-bench-owner", workdir / "o"))
        guest = stack.enter_context(users.temp_user("fluximp-bench-guest", workdir / "g"))
        socket = stack.enter_context(munged.running_munged())
        # Only root and the two users can reach the setuid builds.
        gate = stack.enter_context(impenv.gate(owner.pw_uid, guest.pw_uid))
        prefix = stack.enter_context(impenv.gated_dir(gate, "fluximp-install-"))
        install = impenv.build(prefix, gate)  # byte-compiled, as a package install is
        pattern = write_exec_config(workdir / "conf.d", socket, owner, (SHELL, TRUE))
        yield ExecSetup(install.test_build, pattern, owner, guest)


def report(runs: int, setup: ExecSetup) -> None:
    python = os.path.realpath(sys.executable)
    floor = summary(measure_simple(setup, [python, "-I", "-S", "-c", "pass"], runs))
    rows = {
        "version": summary(measure_simple(setup, [str(setup.imp), "version"], runs)),
        "exec": summary(measure_exec(setup, runs)),
    }
    print(f"{runs} runs each, as the owner through the setuid test launcher")
    print(f"{'python3 -I -S -c pass':<24} median {floor[0]:6.1f} ms  p90 {floor[1]:6.1f} ms")
    for name, (median, p90) in rows.items():
        target = TARGET_MS[name]
        verdict = "ok" if median <= target else "MISSED"
        print(f"{'flux-imp ' + name:<24} median {median:6.1f} ms  p90 {p90:6.1f} ms  "
              f"x{median / floor[0]:.2f} python  (target <= {target:.0f} ms: {verdict})")
    mem = measure_lingering(setup)
    verdict = "ok" if mem["Private_Dirty"] <= TARGET_DIRTY_KIB else "MISSED"
    print("lingering IMP: " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in mem.items())
          + f"  (Private_Dirty target <= {TARGET_DIRTY_KIB // 1024} MiB: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", "-n", type=int, default=30)
    runs = parser.parse_args().runs
    if os.getuid() != 0:
        sys.exit("run as root: it installs a setuid launcher and creates users")
    if runs < 2:
        sys.exit("--runs must be at least 2")
    workdir = Path(tempfile.mkdtemp(prefix="fluximp-bench-"))
    try:
        os.chmod(workdir, 0o755)  # noqa: S103 - the users' homes and config live here
        with environment(workdir) as setup:
            report(runs, setup)
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
