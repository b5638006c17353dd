"""``flux-security check``: the installation's posture, one finding a line.

Each check reads what the IMP reads and judges it with the IMP's own code:
the config loader and its path checks (``conf``, ``conf.pathcheck``), the
IMP config's lint (``imp.impconfig``), the signing library (``sign``), the
run and containment judgements (``imp.run_rules``, ``privileged.contain``),
the CA (``sign.ca``) and the audit sender (``imp.audit``).  The rules
written here are the launcher's, which exist only in C and in the
bootstrap string (no Python module holds them): root-only
(:class:`RootOnly`) and ELF-only (:func:`_is_elf`, for the lingering helper).

A finding is ``OK``, ``WARN`` or ``FAIL``; any FAIL makes the exit code 1.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import click

from .. import conf as cf
from ..paths import SYSCONFDIR, security_config_pattern

IMP = "/usr/libexec/flux/flux-imp"
PAM_DIR = "/etc/pam.d"  # libpam's, compiled into it: not under SYSCONFDIR
CA_EXPIRY_WARNING = 30 * 86400  # seconds: a CA cert closer to its end than this warns
_MAX_LISTED = 5  # offending files named one a line; the rest are counted
# Imported by nacl's bindings, but shipped by Debian (python3-cffi-backend)
# without metadata naming it: the dependency walk cannot find it.
_UNDECLARED = ("_cffi_backend",)
# What the launcher compiles into its bootstrap and messages (flux-imp.c).
_SITE_RE = re.compile(rb'sys\.path\.append\("([^"]+)"\);')
_MAIN_RE = re.compile(rb'main\(test_build=([01]),sysconfdir="([^"]*)"')
_PYTHON_RE = re.compile(rb"execve (/[^\0]+)\0")
_KIND_RE = re.compile(rb"flux-imp-build-kind=(\w+)")
_PROXY_RE = re.compile(rb',proxy="(/[^"]+)"\)')
_REQ_NAME = re.compile(r"[A-Za-z0-9._-]+")


class Finding:
    """One line of the report."""

    __slots__ = ("check", "detail", "status")

    def __init__(self, status: str, check: str, detail: str) -> None:
        self.status = status  # OK, WARN or FAIL
        self.check = check
        self.detail = detail

    def __repr__(self) -> str:
        return f"Finding({self.status!r}, {self.check!r}, {self.detail!r})"

    def line(self) -> str:
        return f"{self.status} {self.check}: {self.detail}"

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "check": self.check, "detail": self.detail}


def _ok(check: str, detail: str) -> Finding:
    return Finding("OK", check, detail)


def _warn(check: str, detail: str) -> Finding:
    return Finding("WARN", check, detail)


def _fail(check: str, detail: str) -> Finding:
    return Finding("FAIL", check, detail)


# ------------------------------------------------------- the root-only rule


class RootOnly:
    """The launcher's rule (check_root_only() in packaging/launcher/flux-imp.c
    and the import guard, flux_imp/imp/guard.py), once more: a path and
    every directory above it must be root's and writable by neither group
    nor others, sticky directories excepted; symlinks are judged where
    they lead, and an absent path by the directory that could gain it.

    Not pathcheck.path_is_secure: that one refuses symlinks and anything
    but a regular file (the standard library holds both), and trusts the
    effective uid when not root.  Judgements are memoized, as the guard's.
    """

    def __init__(self) -> None:
        self._judged: dict[str, str | None] = {}

    def offender(self, path: str) -> str | None:
        """The first path on the way up from ``path`` that breaks the rule."""
        if path not in self._judged:
            self._judged[path] = None  # a symlink loop ends here
            self._judged[path] = self._judge(path)
        return self._judged[path]

    def _judge(self, path: str) -> str | None:
        try:
            st: os.stat_result | None = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None  # judged by the directory that could gain it
        if st is None:
            pass
        elif stat.S_ISLNK(st.st_mode):
            bad = self.offender(os.path.realpath(path))
            if bad is not None:
                return bad
        elif st.st_uid != 0 or (st.st_mode & 0o022 and not (
                stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX)):
            return path
        parent = os.path.dirname(path)
        return None if parent == path else self.offender(parent)


def _root_only_text(path: str) -> str:
    return f"{path}: not owned by root, or writable by group or others"


# --------------------------------------------------------------- the site


class Launcher:
    """What the installed launcher was built with, read off the binary."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            data = f.read()
        python = _PYTHON_RE.search(data)
        main = _MAIN_RE.search(data)
        kind = _KIND_RE.search(data)
        self.python = os.fsdecode(python.group(1)) if python else None
        self.sitedirs = [os.fsdecode(m.group(1)) for m in _SITE_RE.finditer(data)]
        self.test_build = main is not None and main.group(1) == b"1"
        self.sysconfdir = os.fsdecode(main.group(2)) if main else None
        self.kind = kind.group(1).decode("ascii", "replace") if kind else None
        proxy = _PROXY_RE.search(data)  # the lingering helper, None if built without
        self.proxy = os.fsdecode(proxy.group(1)) if proxy else None


class Site:
    """Everything the checks share: the launcher, the loaded configs."""

    def __init__(self, imp: str, sysconfdir: str) -> None:
        self.imp = imp
        self.sysconfdir = sysconfdir
        self.rule = RootOnly()
        self.launcher: Launcher | None = None
        self.conf: Any = None  # the ImpConfig, once loaded
        self.sign_ctx: Any = None  # the configured signing Context
        self.sign_table: dict[str, Any] | None = None  # the validated [sign]


# ------------------------------------------------------------- the checks


def check_launcher(site: Site) -> Iterator[Finding]:
    name = "launcher"
    try:
        st = os.stat(site.imp)
        site.launcher = Launcher(site.imp)
    except OSError as exc:
        yield _fail(name, f"{site.imp}: {exc.strerror}")
        return
    mode = stat.S_IMODE(st.st_mode)
    where = f"{site.imp} (uid {st.st_uid}, gid {st.st_gid}, mode {mode:04o})"
    bad = site.rule.offender(site.imp)
    if st.st_uid != 0:
        yield _fail(name, f"{where}: not owned by root")
    elif not mode & stat.S_ISUID:
        yield _fail(name, f"{where}: not setuid: the IMP cannot act for other users")
    elif bad is not None:
        yield _fail(name, _root_only_text(bad))
    else:
        yield _ok(name, f"{where}: setuid root, root-only")
    if mode & stat.S_IXOTH:
        who = "any user may run it (exec.allowed-users and run.*.allowed-users decide)"
    elif mode & stat.S_IXGRP:
        who = f"only root and members of group {_group_name(st.st_gid)} may run it"
    else:
        who = "only root may run it"
    yield _ok("launcher-users", who)
    if site.launcher.kind != "installed" or site.launcher.test_build:
        yield _fail("launcher-build", f"{site.imp} is a test build (or not flux-imp): "
                    "it honours FLUX_IMP_CONFIG_PATTERN and skips path checks")
    built = site.launcher.sysconfdir
    if built is not None and built != site.sysconfdir:
        yield _warn("launcher-build", f"{site.imp} reads {built}/flux, "
                    f"this check {site.sysconfdir}/flux (--sysconfdir)")


def check_helper(site: Site) -> Iterator[Finding]:
    """The lingering helper the launcher names (flux-imp-proxy), judged as
    the launcher's check_install() does: root-only, ELF, never setuid or
    setgid (root execs it with the job's pids and cgroups on its command
    line; set-ID, anyone could)."""
    name = "helper"
    launcher = site.launcher
    if launcher is None:
        return  # check_launcher failed already
    helper = launcher.proxy
    if helper is None:
        yield _warn(name, f"{site.imp} names no lingering helper (built with PROXY=): "
                    "a root Python interpreter lingers for each running job")
        return
    try:
        st = os.stat(helper)
    except FileNotFoundError:
        yield _fail(name, f"{helper}: No such file or directory: the launcher was built "
                    "with it; a root Python interpreter lingers for each running job instead")
        return
    except OSError as exc:
        yield _fail(name, f"{helper}: {exc.strerror}: the launcher refuses to start")
        return
    mode = stat.S_IMODE(st.st_mode)
    where = f"{helper} (uid {st.st_uid}, gid {st.st_gid}, mode {mode:04o})"
    bad = site.rule.offender(helper)
    if bad is not None:
        yield _fail(name, f"{_root_only_text(bad)}: the launcher refuses to start")
    elif not _is_elf(helper):
        yield _fail(name, f"{helper}: not an ELF executable: the launcher refuses to start")
    elif mode & (stat.S_ISUID | stat.S_ISGID):
        yield _fail(name, f"{where}: setuid or setgid: anyone could run it with "
                    "root's privileges on pids and cgroups of their choosing; "
                    "the launcher refuses to start")
    elif not mode & 0o111:
        yield _fail(name, f"{where}: not executable: the IMP cannot hand a job over to it "
                    "and warns on every job")
    else:
        yield _ok(name, f"{where}: root-only, ELF, not setuid")


def _is_elf(path: str) -> bool:
    """A regular file starting with the ELF magic (the launcher's check_elf):
    for a script, the kernel would run an interpreter nobody checked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 4) == b"\x7fELF"
    finally:
        os.close(fd)


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_interpreter(site: Site) -> Iterator[Finding]:
    """Every file and directory the privileged interpreter loads from."""
    name = "interpreter"
    launcher = site.launcher
    if launcher is None or launcher.python is None or not launcher.sitedirs:
        yield _fail(name, f"{site.imp}: no interpreter or site dir found in the launcher")
        return
    # The launcher's check_install(): PYTHON and SITEDIR, as built and real.
    for path in [launcher.python, *launcher.sitedirs]:
        for judged in (path, os.path.realpath(path)):
            bad = site.rule.offender(judged)
            if bad is not None:
                yield _fail(name, _root_only_text(bad))
                return  # never run an interpreter that someone else could change
    try:
        stdlib = _stdlib_path(launcher.python)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        yield _fail(name, f"{launcher.python}: cannot list its standard library: {exc}")
        return
    tops = [*stdlib, *_site_entries(launcher.sitedirs)]
    count, bad_paths = _walk_root_only(site.rule, tops)
    for path in bad_paths[:_MAX_LISTED]:
        yield _fail(name, _root_only_text(path))
    if len(bad_paths) > _MAX_LISTED:
        yield _fail(name, f"and {len(bad_paths) - _MAX_LISTED} more such paths")
    if not bad_paths:
        yield _ok(name, f"{launcher.python}, {' '.join(launcher.sitedirs)}: "
                  f"{count} files and directories root-only")


def _stdlib_path(python: str) -> list[str]:
    """sys.path of ``python`` as the launcher starts it (-I -S): the
    standard library's directories, before SITEDIR is appended."""
    result = subprocess.run(
        [python, "-I", "-S", "-c", "import sys, json; print(json.dumps(sys.path))"],
        capture_output=True, check=True, timeout=30, env={"LC_ALL": "C.UTF-8"}, cwd="/")
    paths = json.loads(result.stdout)
    if not isinstance(paths, list):
        raise ValueError("sys.path is not a list")
    return [p for p in paths if isinstance(p, str) and p.startswith("/")]


def _site_entries(sitedirs: list[str]) -> list[str]:
    """flux_imp and the distributions it requires (transitively), as the
    files and directories of their top-level names in the site dirs."""
    from importlib import metadata

    todo, seen, tops = ["flux_imp"], set(), list(_UNDECLARED)
    while todo:
        dist_name = todo.pop()
        key = re.sub(r"[-_.]+", "_", dist_name).lower()
        if key in seen:
            continue
        seen.add(key)
        dist = next(iter(metadata.distributions(name=dist_name, path=sitedirs)), None)
        if dist is None:
            continue  # e.g. tomli, needed only before Python 3.11
        tops += (dist.read_text("top_level.txt") or "").split()
        for req in dist.requires or []:
            found = _REQ_NAME.match(req)
            if found and "extra ==" not in req:
                todo.append(found.group())
    entries = []
    for sitedir in sitedirs:
        for top in dict.fromkeys(tops):
            base = os.path.join(sitedir, top)
            entries += [p for p in [base, *glob.glob(glob.escape(base) + ".*")]
                        if os.path.lexists(p)]
    return entries


def _walk_root_only(rule: RootOnly, tops: list[str]) -> tuple[int, list[str]]:
    count, bad = 0, []
    for top in tops:
        for here, dirs, files in os.walk(top) if os.path.isdir(top) else [("", [], [top])]:
            for path in [here, *(os.path.join(here, n) for n in [*dirs, *files])]:
                if not path:
                    continue
                count += 1
                offender = rule.offender(path)
                if offender is not None and offender not in bad:
                    bad.append(offender)
    return count, bad


def check_config_paths(site: Site) -> Iterator[Finding]:
    """Both trees, file by file, with the path check the loader applies as root."""
    from ..conf import cglob
    from ..conf.pathcheck import PathError, path_is_secure
    from ..paths import imp_config_pattern

    for name, pattern in (("imp-config", imp_config_pattern(site.sysconfdir)),
                          ("sign-config", security_config_pattern(site.sysconfdir))):
        try:
            paths = cglob.glob(pattern)
        except cglob.ReadError:
            yield _fail(name, f"{pattern}: Read error")
            continue
        if not paths:
            yield _fail(name, f"{pattern}: No config file(s) found")
            continue
        failed = False
        for path in paths:
            try:
                path_is_secure(path)
            except PathError as exc:
                failed = True
                yield _fail(name, f"{path}: {exc.text}")
        if not failed:
            yield _ok(name, f"{pattern}: {len(paths)} file(s) pass the IMP's path checks")


@contextlib.contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """What is written on fd 2 inside the block, as lines: the IMP's log
    writes there directly, and its lint has no other output."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines += tmp.read().decode("utf-8", "replace").splitlines()


def _imp_text(line: str) -> str:
    for prefix in ("flux-imp: Warning: ", "flux-imp: Fatal: ", "flux-imp: "):
        if line.startswith(prefix):
            return line[len(prefix):]
    return line


def check_imp_config(site: Site) -> Iterator[Finding]:
    """Load the IMP config as the installed IMP does: its errors and lint."""
    from ..imp import impconfig
    from ..imp.environ import CallerEnv
    from ..imp.log import ImpError

    error = None
    with _stderr_lines() as lines:
        try:
            site.conf = impconfig.load(CallerEnv([]), test_build=False,
                                       sysconfdir=site.sysconfdir)
        except ImpError as exc:
            error = exc.message
    texts = [_imp_text(line) for line in lines]
    lint = [text for text in texts if text.startswith("config: ")]
    for text in lint:
        yield _fail("imp-keys", text)
    if error is not None:  # the loader's warnings say why
        yield _fail("imp-config", "; ".join([*(t for t in texts if t not in lint), error]))
    elif not lint:
        yield _ok("imp-keys", "every key is known and of its type")
    if cf.as_bool(cf.get_in(site.conf and site.conf.table, "disable-path-paranoia")):
        yield _fail("imp-config", "disable-path-paranoia = true: root trusts any config file")


def check_signing(site: Site) -> Iterator[Finding]:
    """The signing config as the IMP loads it; every allowed mechanism."""
    from ..sign import SignError
    from ..sign.context import Context
    from ..sign.token import lookup_mech, sign_config

    name = "sign-config"
    try:
        if site.conf is not None:
            site.sign_ctx = _imp_state(site).security_context()
        else:  # the IMP config failed: read the signing config the same way
            site.sign_ctx = Context(0)
            site.sign_ctx.configure(security_config_pattern(site.sysconfdir))
        site.sign_table = sign_config(site.sign_ctx)
    except SignError as exc:
        yield _fail(name, exc.text)
        return
    allowed = [m for m in site.sign_table["allowed-types"] if isinstance(m, str)]
    yield _ok("mechanisms", "allowed-types: " + ", ".join(allowed))
    if "none" in allowed:
        yield _warn("mechanisms", "'none' is allowed: anyone may sign a job as anyone")
    for mech_name in allowed:
        mech = lookup_mech(mech_name)
        assert mech is not None  # sign_config() refused unknown ones
        try:
            mech.init(site.sign_ctx, site.sign_table)
        except SignError as exc:
            yield _fail(mech_name, exc.text)
            continue
        if mech_name == "munge":
            yield from _munge_round_trip(site)


def _imp_state(site: Site) -> Any:
    """The IMP's state for this config, for its own methods (security_context)."""
    from ..imp.environ import CallerEnv
    from ..imp.state import Imp

    return Imp([], CallerEnv([]), site.conf, None, 0o022, False)  # type: ignore[arg-type]


def _munge_round_trip(site: Site) -> Iterator[Finding]:
    from ..sign import SignError
    from ..sign.token import unwrap, wrap

    try:
        token = wrap(site.sign_ctx, b"flux-security check", "munge")
        userid = unwrap(site.sign_ctx, token).userid
    except SignError as exc:
        yield _fail("munge", f"round trip failed: {exc.text}")
        return
    yield _ok("munge", f"signed and verified through munged (userid {userid})")


def _section(site: Site, key: str) -> Any:
    return None if site.conf is None else site.conf.section(key)


def check_shells(site: Site) -> Iterator[Finding]:
    shells = cf.get_in(_section(site, "exec"), "allowed-shells")
    for shell in shells if isinstance(shells, list) else []:
        if not isinstance(shell, str):
            yield _fail("shells", f"allowed-shells entry {shell!r} is not a string")
            continue
        problem = _not_executable(shell)
        bad = None if problem else site.rule.offender(shell)
        if problem:
            yield _fail("shells", f"{shell}: {problem}")
        elif bad is not None:
            yield _fail("shells", _root_only_text(bad))
        else:
            yield _ok("shells", f"{shell}: executable, root-only")


def _not_executable(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or "cannot stat"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not st.st_mode & 0o111 or not os.access(path, os.X_OK):
        return "not executable"
    return None


def check_run(site: Site) -> Iterator[Finding]:
    """Each [run.NAME] judged by run's own lookup (path and its path check)."""
    from ..imp.log import ImpError
    from ..imp.run_rules import lookup

    table = _section(site, "run")
    for command in table if isinstance(table, dict) else {}:
        try:
            _, path = lookup(site.conf, command)
        except ImpError as exc:
            yield _fail(f"run.{command}", exc.message)
            continue
        problem = _not_executable(path)
        if problem:
            yield _fail(f"run.{command}", f"{path}: {problem}")
        else:
            yield _ok(f"run.{command}", f"{path}: executable, passes the IMP's path check")


def check_pam(site: Site) -> Iterator[Finding]:
    if not cf.as_bool(cf.get_in(_section(site, "exec"), "pam-support")):
        return
    from ..imp.privileged.contain import pam, setup

    if pam.load() is None:
        yield _fail("pam", setup._NO_PAM)
        return
    service = os.path.join(PAM_DIR, setup.PAM_SERVICE)
    if not os.path.isfile(service):
        yield _fail("pam", f"pam-support = true, but {service} does not exist")
        return
    bad = site.rule.offender(service)
    if bad is not None:
        yield _fail("pam", _root_only_text(bad))
    else:
        yield _ok("pam", f"{service} present, root-only")


def check_cgroup(site: Site) -> Iterator[Finding]:
    exec_conf = _section(site, "exec")
    table = cf.get_in(exec_conf, "cgroup")
    if not isinstance(table, dict):
        return
    from ..imp import cgroup
    from ..imp.log import ImpError
    from ..imp.privileged.contain import setup

    name = "cgroup"
    mine = cgroup.detect()
    parent = table.get("parent")
    if not isinstance(parent, str):
        yield _warn(name, "[exec.cgroup] has no parent: jobs go under the IMP's own "
                    "cgroup (the instance's), which must be a delegated cgroup2 cgroup")
        if mine is None or not mine.unified:
            yield _fail(name, "cgroup v2 is not mounted where this process is")
        return
    if not os.path.isdir(parent):
        yield _fail(name, f"parent {parent} does not exist")
        return
    try:
        # The exec judgement's own check of the parent (the job id is ours).
        setup._plan_cgroup(exec_conf, "check", {},
                           mine or cgroup.CgroupInfo("/", False, False))
    except ImpError as exc:
        yield _fail(name, exc.message)
        return
    if os.statvfs(parent).f_flag & os.ST_RDONLY or not os.access(parent, os.W_OK):
        yield _fail(name, f"parent {parent} is not writable")
        return
    yield _ok(name, f"parent {parent}: cgroup2, writable")
    if not any(_xattr(parent, a) == b"1" for a in ("trusted.delegate", "user.delegate")):
        yield _warn(name, f"parent {parent} is not marked delegated (systemd Delegate=yes): "
                    "its manager may move or remove the jobs' cgroups")
    try:
        with open(os.path.join(parent, "cgroup.procs"), encoding="ascii") as f:
            busy = bool(f.read().split())
    except OSError:
        busy = False
    if busy:
        yield _warn(name, f"parent {parent} holds processes: no limit can be applied "
                    "(cgroup v2's no-internal-processes rule)")


def _xattr(path: str, attr: str) -> bytes | None:
    try:
        return os.getxattr(path, attr)
    except OSError:
        return None


def check_ca(site: Site) -> Iterator[Finding]:
    """The CA of casign ([ca] of the IMP config) and of curve's require-ca."""
    sources = [("imp-config", _section(site, "ca"))]
    if site.sign_ctx is not None and site.sign_ctx.config is not None:
        sources.append(("sign-config", site.sign_ctx.config.get("ca")))
    for where, table in sources:
        if table is not None:
            yield from _check_one_ca(site, f"ca ({where})", table)


def _check_one_ca(site: Site, name: str, table: object) -> Iterator[Finding]:
    from ..sign.ca import CA, CAError

    try:
        ca = CA(table)
        ca.load(secret=False)
    except CAError as exc:
        yield _fail(name, exc.text)
        return
    assert ca.cert is not None
    xtime = ca.cert.meta.get_time("xtime") or 0
    left = xtime - int(time.time())
    until = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(xtime))
    if not ca.cert.meta.get_bool("ca-capability"):
        yield _fail(name, f"{ca.cert_path}.pub lacks ca-capability")
    elif left < 0:
        yield _fail(name, f"{ca.cert_path}.pub expired on {until}")
    elif left < CA_EXPIRY_WARNING:
        yield _warn(name, f"{ca.cert_path}.pub expires on {until}, in {left // 86400} days")
    else:
        yield _ok(name, f"{ca.cert_path}.pub valid until {until}")
    revoke_dir = cf.as_str(cf.get_in(table, "revoke-dir"))
    if not os.path.lexists(revoke_dir):
        yield _warn(name, f"revoke-dir {revoke_dir} does not exist (revoking makes it)")
    elif not os.path.isdir(revoke_dir):
        yield _fail(name, f"revoke-dir {revoke_dir} is not a directory: "
                    "every certificate reads as revoked")
    else:
        bad = site.rule.offender(revoke_dir)
        if bad is not None:
            yield _fail(name, f"revoke-dir: {_root_only_text(bad)}")
        else:
            yield _ok(name, f"revoke-dir {revoke_dir}: a root-only directory")


def check_audit(site: Site) -> Iterator[Finding]:
    """Where the IMP's records go: syslog, else its fallback file."""
    from ..imp import audit

    required = cf.as_bool(cf.get_in(site.conf and site.conf.table, "audit-required"))
    error = audit._syslog(audit._NOTICE, None)  # connect only, as audit-required does
    if error is None:
        yield _ok("audit", f"{audit.SYSLOG} accepts a connection")
        return
    why = f"{audit.SYSLOG}: {error.strerror}"
    if required:
        yield _fail("audit", f"{why}: with audit-required, the IMP refuses every command")
        return
    fallback = os.path.join(audit.FALLBACK_DIR, audit.FALLBACK)
    for path in (audit.FALLBACK_DIR, fallback):
        try:
            audit._check_roots(os.lstat(path), path)
        except FileNotFoundError:
            continue  # the IMP makes them, root's
        except OSError as exc:
            yield _fail("audit", f"{why}, and the fallback is unusable: {exc.strerror}")
            return
    yield _warn("audit", f"{why}: records go to {fallback}")


CHECKS: tuple[Callable[[Site], Iterator[Finding]], ...] = (
    check_launcher, check_helper, check_interpreter, check_config_paths, check_imp_config,
    check_signing, check_shells, check_run, check_pam, check_cgroup, check_ca, check_audit,
)


def run_checks(imp: str = IMP, sysconfdir: str = SYSCONFDIR) -> list[Finding]:
    """Every finding about the installation, in the order of CHECKS."""
    site = Site(imp, sysconfdir)
    return [finding for check_ in CHECKS for finding in check_(site)]


@click.command("check")
@click.option("--imp", "imp", default=IMP, show_default=True, metavar="PATH",
              help="The installed setuid launcher.")
@click.option("--sysconfdir", default=SYSCONFDIR, show_default=True, metavar="DIR",
              help="Where flux/imp/conf.d and flux/security/conf.d are.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON list.")
def check(imp: str, sysconfdir: str, as_json: bool) -> None:
    """Report the installation's security posture, one finding a line:
    OK|WARN|FAIL <check>: <detail>.  Exit 1 if any finding is FAIL.

    Run as root: it reads what the IMP reads, with the IMP's own code.
    """
    findings = run_checks(imp, sysconfdir)
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            click.echo(finding.line())
    if any(f.status == "FAIL" for f in findings):
        raise click.exceptions.Exit(1)
