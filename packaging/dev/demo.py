"""Main job, for now: sign and verify a J with every mechanism via flux-sign.

A temporary user signs (curve in home-directory mode needs a user whose home
holds the cert), everything lives in a temporary directory with a private
munged, and nothing is left behind.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.munged import running_munged
from tests.users import become, temp_user

FLUX_SIGN = [sys.executable, "-m", "flux_imp.sign"]
USER = "flux-demo-guest"
CONFIG = """\
[sign]
max-ttl = 60
default-type = "curve"
allowed-types = [ "none", "curve", "munge" ]
[sign.curve]
require-ca = false
[sign.munge]
socket-path = "{socket}"
"""


def flux_sign(args: list[str], stdin: bytes, env: dict[str, str],
              user: pwd.struct_passwd | None = None) -> bytes:
    # Run from / so the installed package is used, as an admin would.
    proc = subprocess.run(FLUX_SIGN + args, input=stdin, capture_output=True, cwd="/",
                          env=env, preexec_fn=become(user) if user else None)
    if proc.returncode != 0:
        sys.exit(f"flux-sign {args[0]} failed: {proc.stderr.decode().strip()}")
    return proc.stdout


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, running_munged() as socket:
        os.chmod(tmp, 0o755)  # noqa: S103 - the demo user reads the config
        Path(tmp, "sign.toml").write_text(CONFIG.format(socket=socket))
        env = {"PATH": "/usr/bin:/bin", "FLUX_SECURITY_CONFIG_PATTERN": f"{tmp}/*.toml"}
        with temp_user(USER, Path(tmp) / "home") as user:
            certdir = Path(user.pw_dir) / ".flux" / "curve"
            certdir.mkdir(parents=True)
            for path in (certdir.parent, certdir):
                os.chown(path, user.pw_uid, user.pw_gid)
            flux_sign(["keygen", str(certdir / "sig")], b"", env, user)
            jobspec = b'{"version": 1, "tasks": [{"command": ["id"]}]}'
            for mech in ("none", "curve", "munge"):
                token = flux_sign(["sign", "--mech", mech], jobspec, env, user)
                # none only verifies for the signer itself; curve and munge
                # are verified by root, as the IMP would.
                verifier = user if mech == "none" else None
                result = flux_sign(["verify"], token, env, verifier).decode().strip()
                print(f"{mech:>5}: signed by {user.pw_name} (uid {user.pw_uid}); "
                      f"verified -> {result}")
        print("sign/verify round trip OK for none, curve and munge")


if __name__ == "__main__":
    main()
