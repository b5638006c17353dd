"""The main job end to end: a signed job started as another user.

Creates an instance owner and a guest user, builds the launcher and
installs it setuid root in a private prefix with an IMP config, has the
guest sign a job request J (munge, through a private munged; then curve
with the guest's own certificate), and has the owner run ``flux-imp exec``:
the job shell prints ``id``, showing the guest's uid.  Everything lives in
a temporary directory and the users are removed afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from flux_imp.sign import Context, wrap
from tests import impenv
from tests.munged import running_munged
from tests.users import become, temp_user

CONFIG = """\
[sign]
max-ttl = 60
default-type = "munge"
allowed-types = [ "munge", "curve" ]
[sign.munge]
socket-path = "{socket}"
[sign.curve]
require-ca = false
[exec]
allowed-users = [ "{owner}" ]
allowed-shells = [ "/usr/bin/id" ]
"""


def sign_as(user: pwd.struct_passwd, pattern: str, mech: str, jobspec: bytes) -> str:
    """Sign in a child that became ``user`` (its uid is what J asserts)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        become(user)()
        os.environ["HOME"] = user.pw_dir
        ctx = Context()
        ctx.configure(pattern)
        os.write(wfd, wrap(ctx, jobspec, mech).encode())
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        token = f.read().decode()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not token:
        sys.exit(f"signing as {user.pw_name} failed")
    return token


def main() -> None:
    prefix = impenv.make_prefix()
    try:
        with running_munged() as socket, \
                temp_user("flux-demo-owner", prefix / "owner") as owner, \
                temp_user("flux-demo-guest", prefix / "guest") as guest:
            inst = impenv.build(prefix)
            pattern = impenv.write_config(
                prefix / "conf.d", CONFIG.format(socket=socket, owner=owner.pw_name))
            # The guest's curve cert, in ~/.flux/curve as the IMP expects.
            certdir = Path(guest.pw_dir) / ".flux" / "curve"
            certdir.mkdir(parents=True)
            for path in (certdir.parent, certdir):
                os.chown(path, guest.pw_uid, guest.pw_gid)
            subprocess.run([sys.executable, "-m", "flux_imp.sign", "keygen",
                            f"{guest.pw_dir}/.flux/curve/sig"], check=True,
                           preexec_fn=become(guest), cwd="/", env={"PATH": "/usr/bin:/bin"})
            print(f"installed {inst.test_build} (setuid root); "
                  f"owner {owner.pw_name} uid {owner.pw_uid}, "
                  f"guest {guest.pw_name} uid {guest.pw_uid}")
            for mech in ("munge", "curve"):
                token = sign_as(guest, pattern, mech, b'{"version": 1}')
                result = impenv.run(
                    inst.test_build, ["exec", "/usr/bin/id", "-a"],
                    as_user=become(owner), stdin=json.dumps({"J": token}).encode(),
                    env={"PATH": "/usr/bin:/bin", "FLUX_IMP_CONFIG_PATTERN": pattern})
                sys.stderr.buffer.write(result.stderr)
                shown = result.stdout.decode().strip()
                print(f"{mech:>5}: owner ran flux-imp exec; job shell printed: {shown}")
                if result.returncode != 0 or f"uid={guest.pw_uid}(" not in shown:
                    sys.exit(f"FAILED: the job did not run as {guest.pw_name}")
        print("OK: signed jobs started as the guest by the setuid flux-imp")
    finally:
        shutil.rmtree(prefix)


if __name__ == "__main__":
    main()
