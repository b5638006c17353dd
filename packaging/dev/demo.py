"""The main job end to end, the way a site runs it.

Builds the .deb (``make -C packaging deb``) and installs it; configures an
instance owner and a guest user with munge under /etc/flux; the guest signs
a job request J with the installed ``flux-sign``, and the owner runs the
installed ``/usr/libexec/flux/flux-imp exec`` on it: the job prints the
guest's ids.  A tampered J is refused.  Prints the audit records the IMP
wrote.  Then removes the users and the configuration (the package stays
installed; the last line says how to remove it).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from tests import sitepkg
from tests.syslogtrap import syslog_trap
from tests.users import temp_user, world_dir

CONFIG = """\
# Written by the flux-imp demo, removed when it ends.
[exec]
allowed-users = [ "{owner}" ]
allowed-shells = [ "/usr/bin/id" ]
"""


def fail(why: str) -> None:
    sys.exit(f"FAILED: {why}")


def show_install() -> None:
    st = os.stat(sitepkg.IMP)
    print(f"installed {sitepkg.PACKAGE} {sitepkg.installed_version()}: {sitepkg.IMP} "
          f"{stat.filemode(st.st_mode)} uid={st.st_uid} gid={st.st_gid}")


def demo(tmp: Path) -> None:
    with temp_user("flux-demo-owner", tmp / "owner") as owner, \
            temp_user("flux-demo-guest", tmp / "guest") as guest, \
            syslog_trap(tmp) as trap:
        conf = sitepkg.write_imp_config("demo.toml", CONFIG.format(owner=owner.pw_name))
        print(f"owner {owner.pw_name} (uid {owner.pw_uid}), guest {guest.pw_name} "
              f"(uid {guest.pw_uid}); IMP config {conf}")
        token = sitepkg.sign(guest, b'{"version": 1}')
        print(f"guest signed J with {sitepkg.FLUX_SIGN} (munge): {token[:48]}...")

        job = sitepkg.imp(owner, ["exec", "/usr/bin/id", "-a"], sitepkg.exec_input(token),
                          preexec=trap.preexec())
        sys.stderr.buffer.write(job.stderr)
        shown = job.stdout.decode().strip()
        print(f"owner ran flux-imp exec /usr/bin/id -a; the job printed: {shown}")
        if job.returncode != 0 or not shown.startswith(f"uid={guest.pw_uid}("):
            fail(f"the job did not run as {guest.pw_name}")

        bad = sitepkg.imp(owner, ["exec", "/usr/bin/id", "-a"],
                          sitepkg.exec_input(sitepkg.tamper(token)), preexec=trap.preexec())
        print(f"tampered J: exit {bad.returncode}, {bad.stderr.decode().strip()}")
        if bad.returncode == 0 or bad.stdout:
            fail("a tampered J was not refused")

        print("audit records (syslog, authpriv):")
        records = trap.records()
        for _, text in records:
            print(f"  {text}")
        if not records:
            fail("the IMP wrote no audit record")


def main() -> None:
    if os.getuid() != 0:
        sys.exit("run as root: it installs a package and creates users")
    deb = sitepkg.build_deb()
    print(f"built {deb.relative_to(sitepkg.TOP)}")
    sitepkg.install_deb(deb)
    show_install()
    with sitepkg.saved_etc_flux(), sitepkg.system_munged(), world_dir("flux-demo-") as tmp:
        demo(tmp)
    print("OK: a guest-signed job started as the guest by the installed setuid flux-imp")
    print(f"demo users and configuration removed; remove the package with: "
          f"apt-get purge {sitepkg.PACKAGE}")


if __name__ == "__main__":
    main()
