"""Installation paths, fixed at build time (never taken from the caller).

The IMP takes ``sysconfdir`` from the launcher that started it (compiled
in by ``make -C packaging/launcher SYSCONFDIR=...``); the package build
writes the same value here, for ``flux-sign`` and library users.
"""

from __future__ import annotations

SYSCONFDIR = "/etc"


def security_config_pattern(sysconfdir: str) -> str:
    """flux-security's compiled-in signing config pattern."""
    return f"{sysconfdir}/flux/security/conf.d/*.toml"


def imp_config_pattern(sysconfdir: str) -> str:
    """flux-security's compiled-in IMP config pattern."""
    return f"{sysconfdir}/flux/imp/conf.d/*.toml"


SECURITY_CONFIG_PATTERN = security_config_pattern(SYSCONFDIR)
IMP_CONFIG_PATTERN = imp_config_pattern(SYSCONFDIR)
