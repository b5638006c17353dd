"""The IMP's own configuration (``imp/conf.d``) and where the signing
configuration comes from.

Upstream reads IMP keys leniently (a mistyped key is silently ignored, a
wrong type reads as false/empty).  We read them the same way, so behaviour
is identical, but warn about every unknown key and every wrongly typed
value, so that nothing is misread silently.
"""

from __future__ import annotations

import posix

from .. import conf as cf
from ..paths import SYSCONFDIR, imp_config_pattern, security_config_pattern
from ..sign import DISABLE_PATH_PARANOIA
from .log import die, log

# Annotations only: every command loads its config here, and typing costs
# start-up time (mypy reads the flag as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from .environ import CallerEnv

    T = TypeVar("T")

# Expected type of every key we know; "run.*" entries apply to each table.
_SCHEMA: dict[str, str] = {
    "allow-sudo": "bool",
    "log-level": "string",
    "audit-required": "bool",  # act only on what syslog took (audit.py)
    "enable-path-paranoia": "bool",
    "disable-path-paranoia": "bool",
    "exec": "table",
    "exec.allowed-users": "array",
    "exec.allowed-shells": "array",
    "exec.allow-unprivileged-exec": "bool",
    "exec.pam-support": "bool",
    "exec.keep-loader-env": "bool",
    "exec.cgroup": "table",  # present: each job gets its own cgroup (privileged/contain/cgroup.py)
    "exec.cgroup.parent": "string",
    "exec.private-tmp": "table",  # present: private /tmp (privileged/contain/namespaces.py)
    "exec.private-tmp.size": "string",
    "run": "table",
    "run.*": "table",
    "run.*.path": "string",
    "run.*.allowed-users": "array",
    "run.*.allowed-environment": "array",
    "run.*.allowed-unsafe-environment": "array",
    "ca": "table",  # checked strictly by casign
    "sign": "table",  # a test build shares one pattern with the signing config
}


class ImpConfig:
    """The loaded table (a plain class: dataclasses costs every command ~6 ms)."""

    def __init__(
        self, table: dict[str, Any], security_pattern: str | None, security_flags: int
    ) -> None:
        self.table = table
        # Where and how the signing library loads its configuration.
        self.security_pattern = security_pattern
        self.security_flags = security_flags

    def section(self, name: str) -> Any:
        return cf.get_in(self.table, name)


def _schema_key(path: list[str]) -> str:
    if path and path[0] == "run" and len(path) >= 2:
        return ".".join(["run", "*", *path[2:]])
    return ".".join(path)


def lint(table: dict[str, Any], path: list[str] | None = None) -> list[tuple[str, str]]:
    """Every unknown or wrongly typed key of ``table``: (dotted key, the
    IMP's warning), in the order the IMP warns (flux-security config too)."""
    found: list[tuple[str, str]] = []
    for key, value in table.items():
        here = [*(path or []), key]
        dotted = ".".join(here)
        name = _schema_key(here)
        want = _SCHEMA.get(name)
        if want is None:
            found.append((dotted, f"config: unknown key '{dotted}' ignored"))
            continue
        if cf.typeof(value) != want:
            found.append((dotted, f"config: '{dotted}' should be of type {want}, "
                          "read as false/empty"))
            continue
        if want == "table" and name not in ("ca", "sign"):
            found.extend(lint(value, here))
    return found


def in_callers_cwd(pattern: str | None, cwd: str, load: Callable[[], T]) -> T:
    """``load()`` with a relative ``pattern`` read from the caller's ``cwd``.

    Only a test build has a pattern of the caller's choosing, and upstream's
    test build resolves a relative one against the caller's cwd.  Running
    the load there (rather than joining cwd to the pattern) keeps glob's
    names relative, so every message names the files exactly as upstream's.
    The privileged parent returns to "/" (wherever it was) right after; in a
    test build only, which is never installed.  Unknown or unreachable cwd:
    load where we are, as a relative pattern would in "/".
    """
    if not pattern or pattern[0] == "/" or not cwd:
        return load()
    here = posix.open(".", posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        try:  # noqa: SIM105 - contextlib costs start-up time
            posix.chdir(cwd)
        except OSError:
            pass
        return load()
    finally:
        posix.fchdir(here)
        posix.close(here)


def load(env: CallerEnv, test_build: bool, cwd: str = "",
         sysconfdir: str = SYSCONFDIR, test_pattern: str = "") -> ImpConfig:
    """Load and lint the IMP config; die with upstream's messages.

    ``cwd`` is the caller's ("" if unknown): a test build's relative
    FLUX_IMP_CONFIG_PATTERN is read from there, as upstream's.
    ``sysconfdir`` is the one the launcher was built with; so is a test
    build's ``test_pattern``, what it reads when FLUX_IMP_CONFIG_PATTERN is
    unset (upstream's reads its source tree's imp.conf.d)."""
    pattern = imp_config_pattern(sysconfdir)
    base: dict[str, object] = {}
    security_pattern = security_config_pattern(sysconfdir)
    security_flags = 0
    if test_build:
        # Only a test build of the launcher honours these, as upstream.
        pattern = env.get("FLUX_IMP_CONFIG_PATTERN") or test_pattern or pattern
        security_pattern = pattern
        if env.get("FLUX_TEST_IMP_PATH_PARANOIA") is None:
            base["disable-path-paranoia"] = True
            security_flags = DISABLE_PATH_PARANOIA
    try:
        table, count = in_callers_cwd(
            security_pattern, cwd, lambda: cf.load_glob(pattern, base=base)
        )
    except cf.ConfigError as exc:
        log.warn(f"loading config: {exc.filename}: {exc.lineno}: {exc.text}")
        die("Failed to load configuration")
    if count == 0:
        log.warn(f"{pattern}: No config file(s) found")
        die("Failed to load configuration")
    for _key, warning in lint({k: v for k, v in table.items() if k not in base}):
        log.warn(warning)
    return ImpConfig(table, security_pattern, security_flags)
