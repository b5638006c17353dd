"""A/B benchmark (not a test): two revisions of flux-imp, timed interleaved.

Run as root from a checkout::

    /opt/flux-imp-dev/venv/bin/python bench/ab_imp.py A B [--runs N] [--command NAME ...]

A and B are git revisions of this checkout, or ``.`` for its work tree as
it is.  Each one's ``flux_imp`` and ``packaging/launcher`` are built as a
setuid test build (``tests/impenv.py``, byte-compiled) inside the set-up
of ``bench_imp.py`` (its users, munged, CA and configs, none with
``[exec.cgroup]``).  Every round runs each command once with A and once
with B, A first in even rounds and B first in odd ones, after 3 warm-up
rounds, from a forked child that became the owner, by posix_spawn (so
the bench's own size adds no noise); exec's J are signed before the
round.  Printed per command: each build's median, p25 and p75 in ms and
the median of the rounds' B - A.

Medians of runs minutes apart moved by 10 % here with nothing changed, so
a change is judged by runs interleaved like these, never by two bench runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_imp import (
    MECHANISMS,
    RUN_NAME,
    TRUE,
    WARMUP,
    Bench,
    bench_workdir,
    environment,
    sign_tokens,
)
from tests import impenv, users

COMMANDS = ("version", "whoami", "run", *(f"exec-{m}" for m in MECHANISMS))
SOURCES = ("flux_imp", "packaging/launcher")  # what a build is made of
WORK_TREE = "."


def export(rev: str, where: Path) -> Path:
    """The build sources of ``rev`` (WORK_TREE: as they are) under ``where``,
    writable by nobody but their owner (the import guard's rule)."""
    where.mkdir(mode=0o755)
    if rev == WORK_TREE:
        for part in SOURCES:
            shutil.copytree(impenv.TOP / part, where / part,
                            ignore=shutil.ignore_patterns("__pycache__", "*.o"))  # fmt: skip
    else:
        data = subprocess.run(["git", "-C", str(impenv.TOP), "archive", "--format=tar", rev,
                               *SOURCES], check=True, capture_output=True).stdout  # fmt: skip
        with tarfile.open(fileobj=BytesIO(data)) as archive:
            archive.extractall(where)  # noqa: S202 - our own repository's archive
    for path in [where, *where.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & 0o755)
    return where


def spawn_ms(argv: list[str], env: dict[str, str], stdin: str) -> float:
    """Wall time of ``argv`` from posix_spawn (vfork: the bench's size does
    not count, as it would in a fork) to reaping; exits on failure."""
    files = [(os.POSIX_SPAWN_OPEN, 0, stdin, os.O_RDONLY, 0),
             (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)]  # fmt: skip
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env, file_actions=files)
    _, status = os.waitpid(pid, 0)
    took = (time.perf_counter() - start) * 1000
    if status != 0:
        sys.exit(f"{argv!r} failed: wait status {status:#x} (its stderr is above)")
    return took


def round_ms(bench: Bench, builds: list[Path], command: str, order: tuple[int, int],
             workdir: Path) -> list[float]:  # fmt: skip
    """One round of ``command``: its ms with each build, run in ``order`` by
    a forked child that became the owner."""
    mechanism = command.partition("-")[2]
    setup = bench.setup(mechanism or "munge")  # munge's config: any will do without J
    stdin = ["/dev/null", "/dev/null"]
    if mechanism:
        tokens = sign_tokens(bench.signer(mechanism), setup.pattern, 2)
        for b, token in enumerate(tokens):
            stdin[b] = str(workdir / f"J-{b}")
            Path(stdin[b]).write_text(json.dumps({"J": token}))
            os.chmod(stdin[b], 0o644)
    if command == "run":
        args = ["run", RUN_NAME]
    elif mechanism:
        args = ["exec", TRUE, "1"]
    else:
        args = [command]
    env = {"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": setup.pattern}

    def timed() -> bytes:
        took = [0.0, 0.0]
        for b in order:
            took[b] = spawn_ms([str(builds[b]), *args], env, stdin[b])
        return json.dumps(took).encode()

    result: list[float] = json.loads(users.output_as(users.become(setup.owner), timed))
    return result


def measure(bench: Bench, builds: list[Path], commands: list[str], runs: int,
            workdir: Path) -> dict[str, list[list[float]]]:  # fmt: skip
    """command -> per build, its ms in round order."""
    times: dict[str, list[list[float]]] = {c: [[], []] for c in commands}
    for i in range(WARMUP + runs):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for command in commands:
            took = round_ms(bench, builds, command, order, workdir)
            if i >= WARMUP:
                for b in (0, 1):
                    times[command][b].append(took[b])
    return times


def report(times: dict[str, list[list[float]]], revs: list[str]) -> None:
    print(f"A = {revs[0]}, B = {revs[1]}: ms, wall time from spawn to reaping, interleaved")
    head = f"  {'command':12}{'build':>6}{'median':>9}{'p25':>9}{'p75':>9}"
    print(f"{head}   B - A (median of rounds)")
    for command, (a, b) in times.items():
        diff = statistics.median(y - x for x, y in zip(a, b))
        for name, values in (("A", a), ("B", b)):
            q = statistics.quantiles(values, n=4)
            tail = f"   {diff:+.2f} ms ({diff / statistics.median(a):+.1%})" if name == "B" else ""
            print(f"  {command:12}{name:>6}{statistics.median(values):9.2f}{q[0]:9.2f}"
                  f"{q[2]:9.2f}{tail}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs=2, metavar="REV", help=f"a git revision, or {WORK_TREE!r}")
    parser.add_argument("--runs", "-n", type=int, default=200, help="timed rounds")
    parser.add_argument("--command", "-c", action="append", choices=COMMANDS,
                        help="what to time (repeatable; default: all)")  # fmt: skip
    args = parser.parse_args()
    if args.runs < 4:
        sys.exit("--runs must be at least 4")
    with bench_workdir("fluximp-ab-") as workdir:
        trees = [export(rev, workdir / f"tree-{i}") for i, rev in enumerate(args.revs)]
        with environment(workdir) as bench:
            prefix = bench.imp.parent.parent  # the gated prefix of its own builds
            builds = [impenv.build_test_launcher(prefix / f"ab-{i}", tree)
                      for i, tree in enumerate(trees)]  # fmt: skip
            times = measure(bench, builds, args.command or list(COMMANDS), args.runs, workdir)
    report(times, args.revs)


if __name__ == "__main__":
    main()
