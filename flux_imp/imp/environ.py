"""The caller's environment, held as data (never our own environment), and
the variables that must not reach a program the IMP starts as someone else."""

from __future__ import annotations

TYPE_CHECKING = False  # annotations only: collections.abc costs start-up time
if TYPE_CHECKING:
    from collections.abc import Iterator

# glibc's secure-mode list (unsecvars.h) beyond LD_*: what steers ld.so and libc.
_LOADER_NAMES = frozenset({
    "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
    "MALLOC_CHECK_", "MALLOC_TRACE", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS",
    "TMPDIR", "TZDIR",
})  # fmt: skip
# What makes a shell or an interpreter run code or read files of the
# caller's choosing (mostly sudo's env_reset list).
_INTERPRETER_NAMES = frozenset({
    "BASH_ENV", "ENV", "IFS", "CDPATH", "GLOBIGNORE", "SHELLOPTS", "BASHOPTS", "PS4", "FPATH",
    "ZDOTDIR", "NULLCMD", "READNULLCMD", "TMPPREFIX", "PATH_LOCALE", "TERMINFO",
    "TERMINFO_DIRS", "TERMCAP", "TERMPATH", "PERLLIB", "PERLIO_DEBUG", "RUBYOPT", "RUBYLIB",
    "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
    "TCLLIBPATH",
})  # fmt: skip
_INTERPRETER_PREFIXES = ("BASH_FUNC_", "PYTHON", "PERL5", "LUA_", "_RLD")


def steers_loader(name: str) -> bool:
    """Does variable ``name`` steer the dynamic loader or libc?"""
    return name.startswith("LD_") or name in _LOADER_NAMES


def unsafe_for_root(name: str) -> bool:
    """Does variable ``name`` steer the loader, libc, a shell or an interpreter?"""
    return (steers_loader(name) or name in _INTERPRETER_NAMES
            or name.startswith(_INTERPRETER_PREFIXES))


class CallerEnv:
    """``NAME=VALUE`` byte strings in caller order, read like getenv(3)."""

    def __init__(self, entries: list[bytes]) -> None:
        self.entries = [e for e in entries if b"=" in e]

    def get(self, name: str) -> str | None:
        """The first ``name=`` entry, as getenv(3) returns it."""
        key = name.encode("utf-8", "surrogateescape") + b"="
        for entry in self.entries:
            if entry.startswith(key):
                return entry[len(key) :].decode("utf-8", "surrogateescape")
        return None

    def items(self) -> Iterator[tuple[str, str]]:
        for entry in self.entries:
            name, _, value = entry.partition(b"=")
            yield (name.decode("utf-8", "surrogateescape"),
                   value.decode("utf-8", "surrogateescape"))

    def without(self, names: frozenset[str]) -> list[bytes]:
        """The entries whose name is not in ``names``."""
        return [e for e in self.entries
                if e.partition(b"=")[0].decode("utf-8", "surrogateescape") not in names]
