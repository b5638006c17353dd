"""Stand-in for ``flux_imp.imp.main`` in launcher tests: report what Python sees.

Built into a test launcher with ``MODULE=tests.launcher_probe``; prints one
JSON object on stdout, or writes it to PATH when the first argument is
``--probe-out=PATH`` (for runs whose stdout is closed).  Each argument
``--probe-import=MODULE`` imports MODULE first (as root, through the
launcher's import guard).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any


def _open_fds() -> dict[int, str]:
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # listdir's own descriptor, closed by now
    return fds


def _ignored_signals() -> list[int]:
    """Ignored signals as the kernel has them (Python ignores SIGPIPE, SIGXFSZ)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("SigIgn:"):
                mask = int(line.split()[1], 16)
                return [sig for sig in range(1, 65) if mask & (1 << (sig - 1))]
    raise RuntimeError("no SigIgn in /proc/self/status")


def _module_file(name: str) -> str | None:
    module = sys.modules.get(name)
    return None if module is None else getattr(module, "__file__", None)


def _mapped_files() -> list[str]:
    """Files mapped into this process: the interpreter, its libraries, any preload."""
    with open("/proc/self/maps") as maps:
        return sorted({line.split(None, 5)[5].strip() for line in maps
                       if len(line.split(None, 5)) == 6 and "/" in line})  # fmt: skip


def main(test_build: int, sysconfdir: str, test_pattern: str | None = None,
         proxy: str = "") -> None:
    fds_at_start = _open_fds()
    for arg in sys.argv[1:]:
        if arg.startswith("--probe-import="):
            __import__(arg.split("=", 1)[1])
    from flux_imp.imp.launch import read_launch_data

    launch: dict[str, Any]
    try:
        data = read_launch_data()
        launch = {
            "environ": [entry.decode("utf-8", "surrogateescape") for entry in data.environ],
            "umask": data.umask,
            "via_launcher": data.via_launcher,
            "cwd": data.cwd,
        }
    except Exception as err:
        launch = {"error": f"{type(err).__name__}: {err}"}
    umask = os.umask(0o022)
    os.umask(umask)
    report = {
        "flags": {
            name: getattr(sys.flags, name, None)
            for name in (
                "isolated",
                "no_site",
                "ignore_environment",
                "dont_write_bytecode",
                "no_user_site",
                "safe_path",
                "inspect",
                "interactive",
                "verbose",
                "dev_mode",
                "utf8_mode",
            )
        },
        "path": sys.path,
        "argv": sys.argv,
        "executable": sys.executable,
        "environ": dict(os.environ),
        "launch": launch,
        "fds_at_start": fds_at_start,
        "fds": _open_fds(),
        "umask": umask,
        "cwd": os.getcwd(),
        "resuid": list(os.getresuid()),
        "resgid": list(os.getresgid()),
        "groups": os.getgroups(),
        "blocked": sorted(int(sig) for sig in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "ignored": _ignored_signals(),
        "sigint_default_handler": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "stdout_encoding": sys.stdout.encoding if sys.stdout else None,
        "warnings_filters": len(sys.warnoptions),
        "test_build": test_build,
        "sysconfdir": sysconfdir,
        "test_pattern": test_pattern,
        "proxy": proxy,
        "mapped": _mapped_files(),
        "modules": {
            name: _module_file(name)
            for name in ("flux_imp", "flux_imp.imp.launch", "tests", "tests.launcher_probe")
        },
        # Which importer loaded the launch module: flux_imp/imp/loader.py's
        # Loader for a byte-compiled site, else the standard one.
        "launch_loader": getattr(getattr(sys.modules.get("flux_imp.imp.launch"), "__loader__",
                                         None), "__name__", None),
        "site_loaded": sorted(
            name for name in ("site", "sitecustomize", "usercustomize") if name in sys.modules
        ),
    }
    text = json.dumps(report, sort_keys=True)
    if len(sys.argv) > 1 and sys.argv[1].startswith("--probe-out="):
        with open(sys.argv[1].split("=", 1)[1], "w") as out:
            out.write(text)
    else:
        print(text)
