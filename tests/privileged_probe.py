"""Stand-in for ``flux_imp.imp.main`` in tests/test_privileged_modules.py:
the real IMP, with a record of which project modules run with privilege.

Built into a test launcher with ``MODULE=tests.privileged_probe`` (never
installed).  A finder put first on ``sys.meta_path`` is asked about every
module a process loads, before the module's code runs: import statements,
``__import__`` and the parent packages they load alike, in every process
of the IMP (the privileged parent, the unprivileged child, the job's
process before and after it drops privilege).  For each ``flux_imp``
module it appends ``<root|user> <pid> <name>`` to ``imports.log`` in the
directory above this package, root meaning euid 0 at that moment.  Each
line is written as it happens, so a process that dies of a signal or
execs has told all the same.
"""

from __future__ import annotations

import os
import sys

_LOG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "imports.log")


def _record(name: str) -> None:
    kind = "root" if os.geteuid() == 0 else "user"
    line = f"{kind} {os.getpid()} {name}\n".encode()
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class _Recorder:
    """A meta path finder that finds nothing and writes down what it was asked."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "flux_imp" or name.startswith("flux_imp."):
            _record(name)


def main(test_build: int, sysconfdir: str, proxy: str = "") -> None:
    # What the launcher's bootstrap loaded before this ran (its importer).
    for name in sorted(sys.modules):
        if name == "flux_imp" or name.startswith("flux_imp."):
            _record(name)
    sys.meta_path.insert(0, _Recorder)
    from flux_imp.imp.main import main as imp_main

    imp_main(test_build, sysconfdir, proxy=proxy)
