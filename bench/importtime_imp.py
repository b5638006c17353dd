"""Profiling aid (not a test): ``python -X importtime`` through the setuid launcher.

Run as root from anywhere::

    /opt/flux-imp-dev/venv/bin/python bench/importtime_imp.py [--min-us N]

Sets up what bench_imp.py does, plus a variant of the test launcher whose
interpreter is a root-owned wrapper adding ``-X importtime``, then runs
``flux-imp version`` and ``flux-imp exec /bin/true 1`` once each, as the
owner, and prints every import line whose cumulative time is at least
``--min-us`` microseconds (default 200), in import order, per command.

Both privsep halves write to the same stderr: for ``exec``, the child's
imports come first, the parent's (``commands.prepare_parent``) interleave
with them, and the job's follow.  Times include ``-X importtime``'s own
overhead; bench_imp.py gives the real figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_imp import TRUE, as_owner, environment

from tests import impenv
from tests.jobs import TIMEOUT, ExecSetup, sign_as, start_exec


def show(title: str, stderr: bytes, min_us: int) -> None:
    print(f"== {title}")
    for line in stderr.decode(errors="replace").splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3:
            print(line)  # the IMP's own messages
            continue
        try:
            cumulative = int(fields[1])
        except ValueError:
            continue  # the header
        if cumulative >= min_us:
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-us", type=int, default=200)
    min_us = parser.parse_args().min_us
    if os.getuid() != 0:
        sys.exit("run as root: it installs a setuid launcher and creates users")
    with tempfile.TemporaryDirectory(prefix="fluximp-importtime-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)  # noqa: S103 - the users' homes and config live here
        with environment(workdir) as bench:
            munge = bench.setup("munge")
            imp = impenv.importtime_build(munge.imp.parent, munge.imp.parent.parent / "site")
            setup = ExecSetup(imp, munge.pattern, munge.owner, munge.guest)
            with as_owner(setup, [str(imp), "version"]) as proc:
                _, err = proc.communicate(timeout=TIMEOUT)
            show("flux-imp version", err, min_us)
            token = sign_as(setup.guest, setup.pattern)
            with start_exec(setup, ["1"], shell=TRUE, token=token,
                            stdout=subprocess.DEVNULL) as proc:
                _, err = proc.communicate(timeout=TIMEOUT)
            show("flux-imp exec /bin/true 1", err, min_us)


if __name__ == "__main__":
    main()
