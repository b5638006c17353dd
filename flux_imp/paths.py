"""Installation paths, fixed at build time (never taken from the caller)."""

from __future__ import annotations

SYSCONFDIR = "/etc"
# flux-security's compiled-in patterns.
SECURITY_CONFIG_PATTERN = f"{SYSCONFDIR}/flux/security/conf.d/*.toml"
IMP_CONFIG_PATTERN = f"{SYSCONFDIR}/flux/imp/conf.d/*.toml"
