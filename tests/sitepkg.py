"""The IMP as a site runs it: the .deb built, installed and configured.

Shared by the README's first command (``packaging/dev/demo.py``) and the
installed-package tests (``tests/test_package.py``).  Everything here
runs other programs (fork+exec): no forked Python child ever returns into
its parent's clean-up code.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
DIST = TOP / "packaging" / "dist"
PACKAGE = "flux-imp"
IMP = "/usr/libexec/flux/flux-imp"
HELPER = "/usr/libexec/flux-imp/flux-imp"  # what the IMP's root parent lingers as
FLUX_SIGN = "/usr/bin/flux-sign"
ETC_FLUX = Path("/etc/flux")
IMP_CONF_D = ETC_FLUX / "imp" / "conf.d"
MUNGE_RUN = Path("/run/munge")
MUNGED = "/usr/sbin/munged"
SITE = Path("/usr/lib/python3/dist-packages")  # where the .deb puts flux_imp
# A site's IMP config: the owner may exec /usr/bin/id (and /usr/bin/sleep,
# a job that keeps running) and run a prolog.
IMP_CONF = """\
[exec]
allowed-users = [ "{owner}" ]
allowed-shells = [ "/usr/bin/id", "/usr/bin/sleep" ]
[run.prolog]
allowed-users = [ "{owner}" ]
path = "{prolog}"
"""
_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
_APT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}


def build_deb() -> Path:
    """``make -C packaging deb``; the .deb it left in packaging/dist/."""
    subprocess.run(["make", "-s", "-C", str(TOP / "packaging"), "deb"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    debs = sorted(DIST.glob(f"{PACKAGE}_*.deb"))
    if len(debs) != 1:
        raise RuntimeError(f"expected one {PACKAGE} .deb in {DIST}, found {debs}")
    return debs[0]


def installed_version() -> str | None:
    """The installed version of the package, or None."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    status = result.stdout.split()
    if result.returncode != 0 or status[:3] != ["install", "ok", "installed"]:
        return None
    return status[3]


def install_deb(deb: Path) -> None:
    """Install (or reinstall) ``deb``; apt brings its dependencies."""
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--reinstall", "--no-install-recommends", str(deb)],
        check=True, env=_APT_ENV, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def purge_package() -> None:
    subprocess.run(["apt-get", "purge", "-y", "-qq", PACKAGE], check=True, env=_APT_ENV,
                   stdout=subprocess.DEVNULL)  # fmt: skip


@contextlib.contextmanager
def saved_etc_flux() -> Iterator[None]:
    """Put /etc/flux back exactly as it was (or absent) on exit."""
    backup = Path(tempfile.mkdtemp(prefix="fluximp-etc-"))
    had = ETC_FLUX.exists()
    try:
        if had:  # cp -a: owners, modes and links as they were
            subprocess.run(["cp", "-a", str(ETC_FLUX), str(backup / "flux")], check=True)
        yield
    finally:
        shutil.rmtree(ETC_FLUX, ignore_errors=True)
        if had:
            subprocess.run(["cp", "-a", str(backup / "flux"), str(ETC_FLUX)], check=True)
        shutil.rmtree(backup)


def _munge_answers() -> bool:
    return subprocess.run(["munge", "--no-input"], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def system_munged() -> Iterator[None]:
    """munged on its default socket, as the package's munge config expects.

    One already answering is used as it is; otherwise one is started as the
    munge user with the system key and stopped on exit."""
    if _munge_answers():
        yield
        return
    made_run = not MUNGE_RUN.exists()
    munge = pwd.getpwnam("munge")
    if made_run:
        MUNGE_RUN.mkdir(mode=0o755)
        os.chown(MUNGE_RUN, munge.pw_uid, munge.pw_gid)
    pidfile = MUNGE_RUN / "munged.pid"
    try:
        subprocess.run(["setpriv", f"--reuid={munge.pw_uid}", f"--regid={munge.pw_gid}",
                        "--clear-groups", MUNGED], check=True)  # fmt: skip
        try:
            if not _munge_answers():
                raise RuntimeError("munged started but does not answer")
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text()), 15)
    finally:
        if made_run:
            shutil.rmtree(MUNGE_RUN, ignore_errors=True)


def write_imp_config(name: str, text: str) -> Path:
    """/etc/flux/imp/conf.d/NAME, root-owned 0644 (the IMP checks that)."""
    path = IMP_CONF_D / name
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


def as_user(user: pwd.struct_passwd, argv: Sequence[str]) -> list[str]:
    """``argv`` run as ``user`` for good, with a clean environment and "/" as cwd."""
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
            "env", "-i", _PATH, f"HOME={user.pw_dir}", f"USER={user.pw_name}", *argv]


def sign(user: pwd.struct_passwd, payload: bytes, mech: str = "munge") -> str:
    """J signed by ``user`` with the installed flux-sign."""
    result = subprocess.run(as_user(user, [FLUX_SIGN, "sign", f"--mech={mech}"]),
                            input=payload, capture_output=True, check=True, cwd="/")  # fmt: skip
    return result.stdout.decode().strip()


def tamper(token: str) -> str:
    """J with one character of its payload changed."""
    header, payload, sig = token.split(".")
    flipped = ("B" if payload[1] == "A" else "A")
    return ".".join([header, payload[0] + flipped + payload[2:], sig])


def imp(user: pwd.struct_passwd, args: Sequence[str], stdin: bytes = b"",
        preexec: Callable[[], None] | None = None) -> subprocess.CompletedProcess[bytes]:
    """The installed IMP run by ``user``; ``preexec`` (e.g. an audit trap's)
    runs as root in the child before it becomes ``user``."""
    return subprocess.run(as_user(user, [IMP, *args]), input=stdin, capture_output=True,
                          cwd="/", preexec_fn=preexec, timeout=60, check=False)


def exec_input(token: str) -> bytes:
    return json.dumps({"J": token}).encode()
