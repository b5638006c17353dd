"""The only module that changes credentials (set*id, initgroups).

Every drop is permanent (real, effective and saved ids all set) and then
verified by trying to regain root, which must fail.
"""

from __future__ import annotations

import os
import pwd

from .log import die


def _verify_cannot_regain(uid: int, gid: int) -> None:
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        die("privilege drop left a saved id behind")
    if uid != 0:
        try:
            os.setreuid(-1, 0)
        except OSError:
            return
        die(f"irreversible switch to uid {uid} failed")


def drop_to_real_ids() -> None:
    """Privsep child: become the caller for good (supplementary groups kept, as upstream)."""
    ruid, rgid = os.getuid(), os.getgid()
    try:
        os.setresgid(rgid, rgid, rgid)
        os.setresuid(ruid, ruid, ruid)
    except OSError as exc:
        die(f"dropping privileges: {exc.strerror}")
    _verify_cannot_regain(ruid, rgid)


def become_user(user: pwd.struct_passwd) -> None:
    """Job shell: the target user's groups, gid and uid, for good."""
    try:
        os.initgroups(user.pw_name, user.pw_gid)
        os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
        os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
    except OSError as exc:
        die(f"switching to user {user.pw_name}: {exc.strerror}")
    _verify_cannot_regain(user.pw_uid, user.pw_gid)


def become_root_for_run() -> None:
    """``run`` command: uid 0, gid 0 and root's groups, for good.

    Upstream keeps the caller's effective gid and supplementary groups in a
    setuid install.  Root's own are safer: with the instance owner's gid the
    command would create files that the owner's group owns, and would act
    with the owner's group memberships, which a root prolog does not expect.
    """
    try:
        os.initgroups("root", 0)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as exc:
        die(f"run: switching to root: {exc.strerror}")
    _verify_cannot_regain(0, 0)


def simulate_sudo(name: str) -> bool:
    """Set only the real uid/gid to SUDO_USER's (upstream sudosim); False if unknown."""
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return False
    try:
        os.setresgid(user.pw_gid, -1, -1)
        os.setresuid(user.pw_uid, -1, -1)
    except OSError:
        return False
    return True
