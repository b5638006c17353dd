"""A private munged for tests: own key, socket, pid, log and seed files.

The daemon runs in the foreground (``--foreground``) as our child, so we
stop it directly; ``--force`` lets it run as root and accept a scratch
directory that its own safety checks would otherwise reject.  The
directory is made world-searchable so that tests running as other uids can
reach the socket (munged creates it mode 0777).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

from . import users

MUNGED = "/usr/sbin/munged"
MUNGE = shutil.which("munge") or "/usr/bin/munge"
_KEY_BYTES = 1024
_START_TIMEOUT = 10.0


class MungedError(RuntimeError):
    """munged did not start or answer in time."""


def available() -> bool:
    return os.access(MUNGED, os.X_OK) and os.access(MUNGE, os.X_OK)


def answers(socket: str) -> bool:
    """True once munged encodes a credential on ``socket``."""
    result = subprocess.run(
        [MUNGE, f"--socket={socket}", "--no-input"], capture_output=True, check=False
    )
    return result.returncode == 0


def _write_key(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(_KEY_BYTES))


def _wait_until_ready(proc: subprocess.Popen[bytes], socket: str, log: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while not (os.path.exists(socket) and answers(socket)):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log, errors="replace") as f:
                raise MungedError(f"munged did not start:\n{f.read()}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_munged() -> Iterator[str]:
    """Start munged; yield its socket path; stop it and clean up on exit."""
    with users.world_dir("munged-") as tmpdir:
        key, socket, pid, log, seed = (
            str(tmpdir / name)
            for name in ("munge.key", "munge.socket", "munged.pid", "munged.log", "munged.seed")
        )
        _write_key(key)
        argv = [
            MUNGED, "--foreground", "--force", f"--socket={socket}", f"--key-file={key}",
            f"--pid-file={pid}", f"--log-file={log}", f"--seed-file={seed}",
        ]  # fmt: skip
        # In the foreground munged logs to stderr; keep it for diagnosis.
        with open(log, "ab") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
        try:
            _wait_until_ready(proc, socket, log)
            yield socket
        finally:
            _stop(proc)
