"""The only module that changes credentials (set*id, initgroups, setfs*id,
the session keyring).

Every drop is permanent (real, effective and saved ids all set) and then
verified by trying to regain root, which must fail.  Two changes are for
one call only, and verified undone: the file-system ids around a connect
(sd_notify), the real ids around making the job's session keyring.
"""

from __future__ import annotations

import errno
import posix
import pwd

from .log import die, log

# Annotations only: typing costs start-up time (mypy reads this as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

# keyctl(2): no libc wrapper (libkeyutils has one), so the syscall by number.
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 271, "s390x": 280,
              "i686": 288, "armv7l": 311}  # fmt: skip
_KEYCTL_JOIN_SESSION_KEYRING = 1


def _verify_cannot_regain(uid: int, gid: int) -> None:
    if posix.getresuid() != (uid, uid, uid) or posix.getresgid() != (gid, gid, gid):
        die("privilege drop left a saved id behind")
    if uid != 0:
        try:
            posix.setreuid(-1, 0)
        except OSError:
            return
        die(f"irreversible switch to uid {uid} failed")


def drop_to_real_ids() -> None:
    """Privsep child: become the caller for good (supplementary groups kept, as upstream)."""
    ruid, rgid = posix.getuid(), posix.getgid()
    try:
        posix.setresgid(rgid, rgid, rgid)
        posix.setresuid(ruid, ruid, ruid)
    except OSError as exc:
        die(f"dropping privileges: {exc.strerror}")
    _verify_cannot_regain(ruid, rgid)


def _set_groups(groups: list[int]) -> bool:
    try:
        posix.setgroups(groups)
    except OSError:  # EINVAL: more than NGROUPS_MAX
        return False
    return True


def become_user(user: pwd.struct_passwd, groups: list[int] | None = None) -> None:
    """Job shell: the target user's groups, gid and uid, for good.  ``groups``:
    what getgrouplist() gave the plan, set as they are (not looked up again
    through NSS); None, or more than setgroups() takes: initgroups()."""
    try:
        if groups is None or not _set_groups(groups):
            posix.initgroups(user.pw_name, user.pw_gid)  # truncates to NGROUPS_MAX
        posix.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
        posix.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)
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
        posix.initgroups("root", 0)
        posix.setresgid(0, 0, 0)
        posix.setresuid(0, 0, 0)
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
        posix.setresgid(user.pw_gid, -1, -1)
        posix.setresuid(user.pw_uid, -1, -1)
    except OSError:
        return False
    return True


def with_fs_ids(uid: int, gid: int, action: Callable[[], T]) -> T:
    """``action()`` with only the file-system ids set to ``uid``/``gid``
    (setfsuid(2), setfsgid(2)): path lookups, connects and opens are judged
    as that user's, while every other id, and so who may signal us, stays.
    OSError(EPERM) if the switch does not take."""
    from .. import cfunc as C  # only for sd_notify to a path: not on every start-up

    libc = C.Library(None)
    setfsuid = libc.function("setfsuid", C.c_uint, [C.c_uint])  # uid_t, gid_t
    setfsgid = libc.function("setfsgid", C.c_uint, [C.c_uint])

    def switch(new_uid: int, new_gid: int) -> bool:
        # Each call returns the previous id, success or not: a second call tells.
        setfsgid(new_gid)
        setfsuid(new_uid)
        return bool(setfsgid(new_gid) == new_gid and setfsuid(new_uid) == new_uid)

    old_uid, old_gid = posix.geteuid(), posix.getegid()  # what the fs ids follow
    try:
        if not switch(uid, gid):
            raise OSError(errno.EPERM, posix.strerror(errno.EPERM))
        return action()
    finally:
        if not switch(old_uid, old_gid):
            die("restoring the file-system ids failed")


def join_new_session_keyring(owner: pwd.struct_passwd) -> None:
    """A new, empty session keyring, ``owner``'s, instead of the caller's,
    whose keys the job shell would otherwise possess.  Without keyrings in
    the kernel (ENOSYS) there is nothing to share: a warning, not fatal."""
    from .. import cfunc as C  # exec's parent imported it while the child worked

    machine = posix.uname().machine
    number = SYS_KEYCTL.get(machine)
    if number is None:
        die(f"exec: keyctl(2) syscall number unknown on {machine}")
    # long syscall(long number, ...): the rest passed as their C types.
    syscall = C.Library(None).function("syscall", C.c_long, [C.c_long], use_errno=True)
    ruid, rgid = posix.getuid(), posix.getgid()
    # The kernel gives the keyring to the real ids (as pam_keyinit does, switch
    # only those, for the one call: the effective ones stay root's).
    try:
        posix.setresgid(owner.pw_gid, -1, -1)
        posix.setresuid(owner.pw_uid, -1, -1)
        rc = syscall(number, C.c_int(_KEYCTL_JOIN_SESSION_KEYRING), C.c_char_p(None))
        err = C.get_errno()
    except OSError as exc:
        rc, err = -1, exc.errno or errno.EPERM
    finally:
        try:
            posix.setresuid(ruid, -1, -1)
            posix.setresgid(rgid, -1, -1)
        except OSError:
            pass
        if posix.getuid() != ruid or posix.getgid() != rgid:
            die("restoring the real ids failed")
    if rc >= 0:
        return
    if err != errno.ENOSYS:
        die(f"exec: failed to join a new session keyring: {posix.strerror(err)}")
    log.warn("exec: kernel without keyrings: no session keyring for the job")
