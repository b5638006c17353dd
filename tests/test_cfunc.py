"""flux_imp.cfunc: real calls into libc and libmunge, and no ctypes on exec's path."""

from __future__ import annotations

import errno
import importlib.util
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from flux_imp import cfunc as C
from flux_imp.imp import cgroup, creds

from . import impenv, jobs, users
from .signconf import ca_mode, sign_table

LIBC = C.Library(None)
OPT_SOCKET = 8  # munge.h MUNGE_OPT_SOCKET


def test_getpid() -> None:
    getpid = LIBC.function("getpid", C.c_int, [])
    assert getpid() == os.getpid()


def test_strlen_stops_at_nul() -> None:
    strlen = LIBC.function("strlen", C.c_long, [C.c_char_p])
    assert (strlen(b"hello"), strlen(b"ab\0cd"), strlen(b"")) == (5, 2, 0)


def test_unsigned_argument_and_result() -> None:
    # setfsuid(-1) is refused and returns the current fsuid (the euid here).
    setfsuid = LIBC.function("setfsuid", C.c_uint, [C.c_uint])
    assert setfsuid(0xFFFFFFFF) == os.geteuid()


def test_errno_of_a_failing_call() -> None:
    close = LIBC.function("close", C.c_int, [C.c_int], use_errno=True)
    C.set_errno(0)
    assert close(-1) == -1
    assert C.get_errno() == errno.EBADF


def test_errno_only_with_use_errno() -> None:
    close = LIBC.function("close", C.c_int, [C.c_int])
    C.set_errno(0)
    assert close(-1) == -1
    assert C.get_errno() == 0  # the private copy was not swapped in


def test_variadic_syscall() -> None:
    syscall = LIBC.function("syscall", C.c_long, [C.c_long], use_errno=True)
    getpid = {"x86_64": 39, "aarch64": 172}.get(os.uname().machine)
    if getpid is None:
        pytest.skip("getpid(2)'s number unknown here")
    assert syscall(getpid) == os.getpid()
    C.set_errno(0)
    assert syscall(-1, C.c_int(0), C.c_char_p(None)) == -1
    assert C.get_errno() == errno.ENOSYS


def test_out_pointer() -> None:
    strtol = LIBC.function("strtol", C.c_long, [C.c_char_p, C.POINTER(C.c_void_p), C.c_int])
    end = C.c_void_p()
    text = b"-123xyz"
    assert strtol(text, C.byref(end), 10) == -123
    assert end.value is not None and C.string_at(end.value) == b"xyz"


def test_time_t() -> None:
    time = LIBC.function("time", C.c_time_t, [C.POINTER(C.c_time_t)])
    stored = C.c_time_t()
    assert time(C.byref(stored)) == stored.value > 1_700_000_000


def test_string_buffer_written_by_c() -> None:
    getcwd = LIBC.function("getcwd", C.c_void_p, [C.c_void_p, C.c_long])
    buf = C.string_buffer(4096)
    assert getcwd(buf, C.sizeof(buf)) == C.addressof(buf)
    cwd = os.getcwd().encode()
    assert C.string_at(C.addressof(buf)) == cwd
    assert C.string_at(C.addressof(buf), len(cwd) + 2) == cwd + b"\0\0"
    assert C.string_at(C.addressof(buf), 0) == b""


def test_variable() -> None:
    environ = LIBC.variable(C.c_void_p, "environ")  # char **
    first = C.c_void_p.from_address(environ.value).value
    assert first is not None and b"=" in C.string_at(first)


def test_missing_library() -> None:
    with pytest.raises(OSError, match=r"^libnope\.so\.9: cannot open shared object file"):
        C.Library("libnope.so.9")


def test_missing_symbol() -> None:
    with pytest.raises(OSError, match="undefined symbol: no_such_function"):
        LIBC.function("no_such_function", C.c_int, [])


def test_munge_round_trip(munged: str) -> None:
    """munge_encode/munge_decode through the real munged, bound here directly."""
    lib = C.Library("libmunge.so.2")
    vp, ip = C.c_void_p, C.c_int
    ctx_create = lib.function("munge_ctx_create", vp, [])
    ctx_destroy = lib.function("munge_ctx_destroy", None, [vp])
    ctx_set = lib.function("munge_ctx_set", ip, [vp, ip])
    encode = lib.function("munge_encode", ip, [C.POINTER(C.c_char_p), vp, vp, ip])
    decode = lib.function("munge_decode", ip, [
        C.c_char_p, vp, C.POINTER(vp), C.POINTER(ip), C.POINTER(C.c_uint), C.POINTER(C.c_uint),
    ])  # fmt: skip
    free = LIBC.function("free", None, [vp])
    ctx = ctx_create()
    assert ctx
    try:
        assert ctx_set(ctx, OPT_SOCKET, C.c_char_p(munged.encode())) == 0
        cred = C.c_char_p()
        payload = b"pay\0load"
        assert encode(C.byref(cred), ctx, payload, len(payload)) == 0
        text = cred.value
        free(C.c_void_p.from_buffer(cred))
        assert text is not None and text.startswith(b"MUNGE:")
        buf, size, uid, gid = C.c_void_p(), C.c_int(), C.c_uint(), C.c_uint()
        rc = decode(text, ctx, C.byref(buf), C.byref(size), C.byref(uid), C.byref(gid))
        assert buf.value is not None
        decoded = C.string_at(buf.value, size.value)
        free(buf)
        assert (rc, decoded, uid.value, gid.value) == (0, payload, os.getuid(), os.getgid())
    finally:
        ctx_destroy(ctx)


def test_munge_mechanism_loads_no_ctypes(tmp_path: Path, munged: str) -> None:
    """A munge sign and verify in a fresh interpreter: _ctypes, never ctypes."""
    conf = tmp_path / "sign.toml"
    conf.write_text('[sign]\nmax-ttl = 30\ndefault-type = "munge"\nallowed-types = ["munge"]\n'
                    f'[sign.munge]\nsocket-path = "{munged}"\n')  # fmt: skip
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from flux_imp.sign import DISABLE_PATH_PARANOIA, Context, unwrap, wrap\n"
        "ctx = Context(DISABLE_PATH_PARANOIA); ctx.configure(sys.argv[2])\n"
        "assert unwrap(ctx, wrap(ctx, b'x')).payload == b'x'\n"
        "print(sorted(name for name in sys.modules if 'ctypes' in name))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(impenv.TOP), str(conf)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout == "['_ctypes']\n"


# -- the IMP's callers ---------------------------------------------------------


def test_statfs_type() -> None:
    assert cgroup._statfs_type("/proc") == 0x9FA0  # PROC_SUPER_MAGIC
    assert cgroup._statfs_type("/nonexistent/path") is None
    mounts = cgroup._read_mountinfo()
    for path in ("/sys/fs/cgroup", "/dev/shm", "/proc"):  # read from mountinfo where certain
        if os.path.ismount(path):
            assert cgroup._fs_type(path, mounts) == cgroup._statfs_type(path), path


def fs_uid_gid() -> tuple[int, int]:
    """This thread's file-system uid and gid, as the kernel has them."""
    with open("/proc/thread-self/status") as status:
        ids = {line.split(":")[0]: line.split() for line in status}
    return int(ids["Uid"][4]), int(ids["Gid"][4])


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another user's fs ids needs root")
def test_with_fs_ids() -> None:
    assert creds.with_fs_ids(65534, 65533, fs_uid_gid) == (65534, 65533)
    assert fs_uid_gid() == (os.geteuid(), os.getegid())
    pid = os.fork()
    if pid == 0:  # a user may not take root's fs ids
        code = 1
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            creds.with_fs_ids(0, 0, fs_uid_gid)
        except OSError as exc:
            code = 0 if exc.errno == errno.EPERM and fs_uid_gid() == (65534, 65534) else 2
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0


# -- the setuid IMP: neither half imports ctypes, nor os ----------------------

# os (and os.path) costs every start about 2 ms: flux_imp calls posix and fs.py;
# stat.py re-exports the built-in _stat, which flux_imp imports instead.
_OS = {"os", "posixpath", "genericpath", "_collections_abc", "stat"}


def missing(imported: list[str]) -> list[str]:
    """What of ``imported`` does not exist here: importtime logs failed
    imports too, and each searched every path entry (the same interpreter
    runs these tests and the IMP)."""
    return [name for name in imported if importlib.util.find_spec(name) is None]

@pytest.mark.parametrize("mech", ["munge", "none", "curve"])
def test_exec_imports_no_ctypes(
    imp: impenv.ImpInstall, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    munged: str, world_tmp: Path, mech: str,
) -> None:  # fmt: skip
    shells = ("/bin/true",)
    exec_table = impenv.toml_table(
        "exec", {"allowed-users": [owner.pw_name], "allowed-shells": list(shells)})
    if mech == "munge":
        pattern = jobs.write_exec_config(world_tmp, munged, owner, shells=shells)
        signer = guest
    elif mech == "curve":  # CA mode, as bench/ times it
        (world_tmp / "ca").mkdir(mode=0o755)
        pattern = impenv.write_config(world_tmp / "conf", sign_table("curve") + exec_table
                                      + ca_mode(world_tmp / "ca", guest))  # fmt: skip
        signer = guest
    else:  # a none J verifies only for the real uid that signed it: the owner's
        pattern = impenv.write_config(world_tmp, sign_table("none") + exec_table)
        signer = owner
    setup = jobs.ExecSetup(impenv.importtime_build(imp.prefix / "libexec", imp.site),
                           pattern, owner, guest)
    token = jobs.sign_as(signer, pattern)
    with jobs.start_exec(setup, ["1"], shell="/bin/true", stdout=subprocess.DEVNULL,
                         token=token) as proc:  # fmt: skip
        status, err = jobs.finish(proc)
    imported = impenv.imported_by(err)
    assert status == 0, err
    assert [name for name in imported if name.split(".")[0] == "ctypes"] == [], err
    assert _OS.isdisjoint(imported), err
    assert missing(imported) == [], err
    if mech == "munge":
        # Both halves verified J through cfunc, imported once, before the fork
        # (exec_rules.prepare), and the child's log shows no import of its own.
        assert imported.count("flux_imp.sign.munge") == 1, err
        assert imported.count("flux_imp.cfunc") == 1, err
        forked = min(imported.index(f"flux_imp.imp.{side}.exec")
                     for side in ("privileged", "unprivileged"))  # fmt: skip
        assert imported.index("flux_imp.sign.munge") < forked, err


@pytest.mark.parametrize("mechanism", ["curve", "munge", "none"])
def test_mechanism_imports_no_os(mechanism: str) -> None:
    """What both halves of exec import to verify J (the curve mechanism with
    its CA and cert code: 1 ms of os an exec once)."""
    code = f"import sys; sys.path.insert(0, {str(impenv.TOP)!r}); import flux_imp.sign.{mechanism}"
    proc = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", "-c", code],
                          capture_output=True, text=True, check=False)  # fmt: skip
    imported = impenv.imported_by(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert f"flux_imp.sign.{mechanism}" in imported, proc.stderr
    assert _OS.isdisjoint(imported), proc.stderr


@pytest.mark.parametrize("command", ["version", "whoami"])
def test_command_imports_no_os(imp: impenv.ImpInstall, owner: pwd.struct_passwd,
                               world_tmp: Path, command: str) -> None:
    pattern = impenv.write_config(world_tmp, "")
    proc = impenv.run(impenv.importtime_build(imp.prefix / "libexec", imp.site), [command],
                      as_user=users.become(owner),
                      env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern})
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    imported = impenv.imported_by(err)
    assert "flux_imp.imp.main" in imported, err  # the log is there
    assert _OS.isdisjoint(imported), err
    assert missing(imported) == [], err
    # Only a command with a privileged half builds a message for it.
    assert ("flux_imp.sign.kv" in imported) == (command == "whoami"), err
