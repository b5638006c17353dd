"""Starting programs as upstream's IMP does: the exec helper and execvp.

``FLUX_IMP_EXEC_HELPER`` (upstream src/imp/exec/safe_popen.c) runs in the
unprivileged privsep child: the value is split on spaces and tabs (no
quoting), run with execvp in a new session with stdout piped to us and
stdin/stderr inherited, in the caller's environment.  Its own exec failure
is reported as ``imp: popen: <argv0>: <strerror>`` with exit 127 (ENOENT)
or 126.

:func:`execvp` is glibc's execvp(3) with the caller's environment as
``environ``: the PATH search uses the caller's PATH and a file without
``#!`` runs through /bin/sh, exactly as when upstream's IMP (whose
environ *is* the caller's) calls execvp.  ``os.execvpe`` differs on both.
"""

from __future__ import annotations

import errno
import posix

from ..fs import fsencode

# Annotations only: typing and collections cost start-up time.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    import signal
    from collections.abc import Sequence
    from typing import NoReturn
else:
    # What signal wraps (loaded with the interpreter): the same functions
    # and numbers, without the enums whose import costs milliseconds.
    import _signal as signal


def split_command(command: str) -> list[str]:
    """Words of ``command`` separated by runs of spaces and tabs (argsplit)."""
    return [word for word in command.replace("\t", " ").split(" ") if word]


def default_signals() -> None:
    """Undo the interpreter's own dispositions before exec (it ignores
    SIGPIPE and SIGXFSZ; a C program would pass on the defaults)."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)


def execvp(file: str, argv: Sequence[str], environ: Sequence[bytes]) -> OSError:
    """Replace this process with ``file`` run as ``argv`` in ``environ``
    (``NAME=VALUE`` entries, passed verbatim); returns only the error."""
    # For a path, execvp(3) is execve(2), then /bin/sh on ENOEXEC.  posix.execve
    # does that first step without ctypes objects built in a freshly forked
    # job (0.2 ms there) where it passes exactly the same strings: argv[0]
    # not empty, and every entry a NAME=VALUE with a NAME of its own.
    env = _as_mapping(environ) if "/" in file and argv and argv[0] else None
    if env is not None:
        try:
            posix.execve(fsencode(file), [fsencode(a) for a in argv], env)
        except OSError as exc:
            if exc.errno != errno.ENOEXEC:
                return OSError(exc.errno, posix.strerror(exc.errno or 0))
        except ValueError:  # an embedded NUL: let execvp(3) meet it
            pass
    from .. import cfunc as C  # only on the way out of this process

    libc = C.Library(None)
    call = libc.function("execvp", C.c_int, [C.c_char_p, C.POINTER(C.c_char_p)], use_errno=True)
    c_argv = (C.c_char_p * (len(argv) + 1))(*(fsencode(a) for a in argv), None)
    c_env = (C.c_char_p * (len(environ) + 1))(*environ, None)
    current = libc.variable(C.c_void_p, "environ")
    saved = current.value
    current.value = C.addressof(c_env)
    C.set_errno(0)
    call(fsencode(file), c_argv)
    code = C.get_errno()
    current.value = saved
    return OSError(code, posix.strerror(code))


def _as_mapping(environ: Sequence[bytes]) -> dict[bytes, bytes] | None:
    """``environ`` as posix.execve takes it, if that passes the same entries
    in the same order; None if not (an entry without '=', an empty or
    repeated name)."""
    env: dict[bytes, bytes] = {}
    for entry in environ:
        name, sep, value = entry.partition(b"=")
        if not sep or not name or name in env:
            return None
        env[name] = value
    return env


class Helper:
    """A running helper: read its stdout with read_all(), then wait()."""

    def __init__(self, pid: int, stdout: int) -> None:
        self.pid = pid
        self.stdout = stdout

    @classmethod
    def spawn(cls, command: str, environ: Sequence[bytes]) -> Helper:
        argv = split_command(command)
        rfd, wfd = posix.pipe()  # both close-on-exec: only the dup on fd 1 is passed
        pid = posix.fork()
        if pid == 0:
            _helper_child(command, argv, wfd, environ)
        posix.close(wfd)
        return cls(pid, rfd)

    def read_all(self) -> bytes:
        """Everything the helper writes, up to EOF (no size limit, as upstream)."""
        chunks = []
        try:
            while chunk := posix.read(self.stdout, 1 << 16):
                chunks.append(chunk)
        finally:
            posix.close(self.stdout)
        return b"".join(chunks)

    def wait(self) -> int:
        """Reap the helper; its wait status (0xffff if it cannot be reaped)."""
        try:
            return posix.waitpid(self.pid, 0)[1]
        except ChildProcessError:
            return 0xFFFF


def _helper_child(command: str, argv: list[str], wfd: int, environ: Sequence[bytes]) -> NoReturn:
    # A forked copy of the IMP: whatever happens, never return into its code.
    code = 126
    try:
        if not argv:
            message = f"failed to tokenize '{command}'"
        else:
            posix.dup2(wfd, 1)
            posix.setsid()
            default_signals()
            err = execvp(argv[0], argv, environ)
            message = f"{argv[0]}: {err.strerror}"
            code = 127 if err.errno == errno.ENOENT else 126
        posix.write(2, f"imp: popen: {message}\n".encode("utf-8", "surrogateescape"))
    finally:
        posix._exit(code)


def exec_failure_code(err: OSError) -> int:
    """Exit code for a failed exec of the job shell or run command (as upstream)."""
    return 126 if err.errno in (errno.EACCES, errno.EPERM) else 127
