"""Device containment: the resource owner's DevicePolicy/DeviceAllow
(options.py) resolved to BPF rules (bpf.py), as upstream's
src/imp/exec/device.c and RFC 15 "Device Containment" describe.

``closed`` (and ``auto`` with entries) starts from systemd's baseline of
harmless devices, ``strict`` from nothing.  An entry names a device node
(``/dev/...``, by stat) or a class (``char-NAME``/``block-NAME``: every
major of that name in /proc/devices, any minor); its access is 1-3 of
``rwm``.  An entry that cannot be resolved is skipped with a warning: the
result only ever allows less (fail closed).
"""

from __future__ import annotations

import os
import stat

from .bpf import Rule
from .log import log
from .options import DevicePolicy

BASELINE = (
    ("/dev/null", "rwm"), ("/dev/zero", "rwm"), ("/dev/full", "rwm"),
    ("/dev/random", "rwm"), ("/dev/urandom", "rwm"), ("/dev/tty", "rwm"),
    ("/dev/ptmx", "rwm"), ("char-pts", "rw"),
)  # fmt: skip


def rules(device: DevicePolicy) -> list[Rule]:
    """The allow-list of ``device`` (logs each decision)."""
    entries = () if device.policy == "strict" else BASELINE
    found: list[Rule] = []
    for spec, access in (*entries, *device.allow):
        new = _resolve(spec, access)
        if new:
            log.debug(f"device: allow {spec} ({access})")
        found += new
    return found


class _Ignored(Exception):
    """An entry to skip; the message says why."""


def _valid_access(access: str) -> bool:
    return 1 <= len(access) <= 3 and all(c in "rwm" for c in access)


def _resolve(spec: str, access: str) -> list[Rule]:
    try:
        if not _valid_access(access):
            raise _Ignored("invalid access key")
        for prefix, kind in (("char-", "c"), ("block-", "b")):
            if spec.startswith(prefix):
                return _class_rules(spec[len(prefix):], kind, access)
        if not spec.startswith("/dev/"):
            raise _Ignored("unknown specifier")
        return [_node_rule(spec, access)]
    except _Ignored as why:
        log.warn(f"device: ignore {spec} ({access}): {why}")
        return []


def _node_rule(spec: str, access: str) -> Rule:
    # Never stat (as root) outside /dev on the resource owner's behalf.
    if not os.path.normpath(spec).startswith("/dev/"):
        raise _Ignored("not a device")
    try:
        st = os.stat(spec)
    except OSError as exc:
        raise _Ignored(exc.strerror or str(exc)) from None
    if stat.S_ISCHR(st.st_mode):
        return Rule("c", os.major(st.st_rdev), os.minor(st.st_rdev), access)
    if stat.S_ISBLK(st.st_mode):
        return Rule("b", os.major(st.st_rdev), os.minor(st.st_rdev), access)
    raise _Ignored("not a device")


def _class_rules(name: str, kind: str, access: str) -> list[Rule]:
    """Every major named ``name`` in /proc/devices' section for ``kind``."""
    try:
        with open("/proc/devices", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise _Ignored(f"/proc/devices: {exc.strerror}") from None
    section, found = "", []
    for line in text.splitlines():
        line = line.rstrip()
        if line in ("Character devices:", "Block devices:"):
            section = "c" if line.startswith("Character") else "b"
            continue
        words = line.split()
        if section == kind and len(words) == 2 and words[0].isdigit() and words[1] == name:
            found.append(Rule(kind, int(words[0]), None, access))
    if not found:
        raise _Ignored("not found in /proc/devices")
    return found
