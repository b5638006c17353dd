"""Benchmark (not a test): how close to the floor can a command get at all?

Run as root from a checkout (it may be in a 0700 directory)::

    /opt/flux-imp-dev/venv/bin/python bench/bound_imp.py [--runs N]

Sets up what bench_imp.py does.  For each command it times (``version``,
``whoami``, ``run bench``, ``exec /bin/true 1`` with none, munge and
curve), it first records, with ``-X importtime`` through the setuid
launcher, every module the command imports, and keeps those its
privileged parent may import (all but ``flux_imp.imp.unprivileged`` and
its modules, which only the child runs).  Then it times, interleaved
round by round as bench_imp.py does: the floor, each command, and each
command's *bound*: a C program that only execs the interpreter (the least
a setuid launcher can be), the launcher's flags, the import guard and
flux_imp's loader (unprivileged: nothing judged), those imports, one fork,
the job's exec (``/bin/true``, the run script; ``whoami``: a child that
exits; ``version``: no fork) and its reaping, and nothing else: no
launcher checks, no config, no J, no privsep, no setup, no audit, no
hand-over.

A bound over a command's target means no change to how the work is done
can meet that target while the privileged parent imports what it does
today: only less code in that process, or a faster interpreter, can.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_imp import (
    FLOOR,
    MECHANISMS,
    RUN_NAME,
    TARGET_RATIO,
    TRUE,
    Bench,
    Launch,
    as_owner,
    bench_workdir,
    environment,
    exec_true,
    sign_tokens,
    summary,
    table_head,
    timed_rounds,
    verdict,
)

from tests import impenv
from tests.jobs import TIMEOUT, ExecSetup

# The bootstrap the launcher runs (packaging/launcher/flux-imp.c), then the
# imports and the job's fork, exec and reaping.
PROBE = """\
import sys
sys.path.append({site!r})
from _frozen_importlib_external import spec_from_file_location
from _frozen_importlib import _load
guard = spec_from_file_location("flux_imp.imp.guard", {site!r} + "/flux_imp/imp/guard.py")
_load(guard).start({site!r})
import gc, posix
gc.disable()
for name in {modules!r}:
    __import__(name)
{tail}
posix._exit(0)
"""
# The job: a fork, the job's program exec'd (or the child's _exit), its reaping.
JOB = """\
pid = posix.fork()
if pid == 0:
    {step}
posix.waitpid(pid, 0)
"""
# The least a setuid launcher can be: one exec of the interpreter, no checks.
HOP_C = "#include <unistd.h>\nint main(int c, char **v) { execv(v[1], v + 1); return 127; }\n"
CHILD_ONLY = "flux_imp.imp.unprivileged"
VERSION, WHOAMI, RUN = "flux-imp version", "flux-imp whoami", f"flux-imp run {RUN_NAME}"
# command -> its argv, or a mechanism (exec /bin/true 1, J signed with it)
COMMANDS: dict[str, list[str] | str] = {
    VERSION: ["version"], WHOAMI: ["whoami"], RUN: ["run", RUN_NAME],
    **{f"flux-imp exec ({m})": m for m in MECHANISMS},
}


def imported(stderr: bytes) -> list[str]:
    """The modules of an ``-X importtime`` log a privileged parent may
    import, in order."""
    return [name for name in impenv.imported_by(stderr.decode(errors="replace"))
            if name != CHILD_ONLY and not name.startswith(CHILD_ONLY + ".")]


def launches(bench: Bench, imp: Path) -> dict[str, Launch]:
    """command -> how to start it through launcher ``imp`` (exec: with a
    fresh J, signed now)."""
    found: dict[str, Launch] = {}
    for name, how in COMMANDS.items():
        if isinstance(how, list):
            found[name] = functools.partial(as_owner, bench.setup("none"), [str(imp), *how])
        else:
            setup = bench.setup(how)
            setup = ExecSetup(imp, setup.pattern, setup.owner, setup.guest)
            token = sign_tokens(bench.signer(how), setup.pattern, 1)[0]
            found[name] = functools.partial(exec_true, setup, token)
    return found


def parent_imports(bench: Bench) -> dict[str, list[str]]:
    """command -> what its privileged parent may import, recorded once each."""
    imp = impenv.importtime_build(bench.imp.parent, bench.imp.parent.parent / "site")
    logs = {}
    for name, launch in launches(bench, imp).items():
        with launch() as proc:
            logs[name] = proc.communicate(timeout=TIMEOUT)[1]
    return {name: imported(log) for name, log in logs.items()}


def probe(path: Path, site: str, modules: list[str], job: str) -> str:
    """``path``, a root-owned, world-readable script: a command's bound,
    importing ``modules``; ``job``: the program its job execs, "-" a child
    that exits, "" no fork."""
    step = "posix._exit(0)" if job == "-" else f"posix.execv({job!r}, [{job!r}])"
    path.write_text(PROBE.format(site=site, modules=modules,
                                 tail=JOB.format(step=step) if job else ""))
    os.chmod(path, 0o644)
    return str(path)


def hop(workdir: Path) -> str:
    """HOP_C built in ``workdir``: root's, 0755, not setuid."""
    source, out = workdir / "hop.c", workdir / "hop"
    source.write_text(HOP_C)
    subprocess.run(["gcc", "-O2", "-o", str(out), str(source)], check=True)
    os.chmod(out, 0o755)  # noqa: S103 - the owner runs it
    return str(out)


def measure(bench: Bench, workdir: Path, runs: int) -> dict[str, list[float]]:
    """ms per launch, interleaved and rotated round by round, after WARMUP rounds."""
    python = os.path.realpath(sys.executable)  # the launcher's interpreter (impenv)
    setup = bench.setup("none")
    site = str(bench.imp.parent.parent / "site")
    modules = parent_imports(bench)
    script = str(Path(setup.pattern).parent.parent / "bin" / "bench-run")
    jobs = {VERSION: "", WHOAMI: "-", RUN: script}
    flags = [hop(workdir), python, "-I", "-S", "-B"]
    bounds: dict[str, Launch] = {
        FLOOR: functools.partial(as_owner, setup, [python, "-I", "-S", "-c", "pass"])}
    for i, name in enumerate(COMMANDS):
        code = probe(workdir / f"bound-{i}.py", site, modules[name], jobs.get(name, TRUE))
        bounds[f"bound: {name}"] = functools.partial(as_owner, setup, [*flags, code])
    times = timed_rounds([*bounds, *COMMANDS], runs,
                         lambda: {**bounds, **launches(bench, bench.imp)})  # fmt: skip
    for name in COMMANDS:
        ours = sum(m.startswith("flux_imp") for m in modules[name])
        print(f"{name}: its bound imports {len(modules[name])} modules ({ours} of flux_imp's)")
    return times


def report(times: dict[str, list[float]], runs: int) -> None:
    floor = table_head(times, runs, "", 38)
    for name in COMMANDS:
        target = TARGET_RATIO[name]
        for row in (name, f"bound: {name}"):
            median, p90 = summary(times[row])
            ratio = median / floor
            if row == name:
                reach = verdict(ratio <= target)
            else:  # no change to the work can bring the command below its bound
                reach = "within reach" if ratio <= target else "OUT OF REACH"
            print(f"  {row:<38} {median:6.1f} ms {p90:6.1f} ms {ratio:7.2f}x  "
                  f"<= {target:.2f}x: {reach}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", "-n", type=int, default=30, help="timed runs per command")
    args = parser.parse_args()
    if args.runs < 2:
        sys.exit("--runs must be at least 2")
    with bench_workdir("fluximp-bound-") as workdir, environment(workdir) as bench, \
            tempfile.TemporaryDirectory(dir=workdir) as probes:
        os.chmod(probes, 0o755)  # noqa: S103 - the owner runs the probes
        times = measure(bench, Path(probes), args.runs)
    report(times, args.runs)


if __name__ == "__main__":
    main()
