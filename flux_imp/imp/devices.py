"""Device containment: the resource owner's DevicePolicy/DeviceAllow
(options.py) resolved to BPF rules (privileged/contain/bpf.py), as upstream's
src/imp/exec/device.c and RFC 15 "Device Containment" describe.

``closed`` (and ``auto`` with entries) starts from systemd's baseline of
harmless devices, ``strict`` from nothing.  An entry names a device node
(``/dev/...``, by stat) or a class (``char-NAME``/``block-NAME``: every
major of that name in /proc/devices, any minor); its access is 1-3 of
``rwm``.  An entry that cannot be resolved is skipped with a warning: the
result only ever allows less (fail closed).

As upstream, the unprivileged child resolves the entries, so a path is
reached with the caller's ids (a stat as root would tell the caller what
lies behind any symlink it plants, and could trigger automounts), and
sends the parent only device numbers, ``device.<i>`` = ``c:1:3:rw`` (minor
-1: any), with ``device.count`` and ``device.policy``.  The parent checks
their form (at most 512, ERANGE, as upstream) and uses them as they are.
"""

from __future__ import annotations

import errno
import posix
import stat
from dataclasses import dataclass

from ..sign.kv import KV
from .log import log
from .options import POLICIES, DevicePolicy, OptionsError


@dataclass(frozen=True)
class Rule:
    """Allow ``access`` (a subset of "rwm") to device ``kind`` major:minor."""

    kind: str  # "c" or "b"
    major: int
    minor: int | None  # None: any minor
    access: str

    def text(self) -> str:
        minor = "*" if self.minor is None else self.minor
        return f"{self.kind} {self.major}:{minor} {self.access}"

MAX_ENTRIES = 512  # upstream DEVICE_ALLOW_MAX_ENTRIES
_MAJOR_MAX, _MINOR_MAX = (1 << 12) - 1, (1 << 20) - 1  # the kernel's dev_t
_COUNT, _POLICY = "device.count", "device.policy"


class DeviceRules(tuple[str, "tuple[Rule, ...]"]):
    """A named tuple (``policy, rules``) without typing: the policy asked
    for (for the audit) and the allow-list it resolved to."""

    __slots__ = ()

    def __new__(cls, policy: str, rules: tuple[Rule, ...]) -> DeviceRules:
        return tuple.__new__(cls, (policy, rules))

    @property
    def policy(self) -> str:
        return self[0]

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self[1]


def resolve(device: DevicePolicy) -> DeviceRules:
    """The child's half: ``device`` resolved with the caller's ids."""
    return DeviceRules(device.policy, tuple(rules(device)))

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
    try:
        st = posix.stat(spec)
    except OSError as exc:
        raise _Ignored(exc.strerror or str(exc)) from None
    if stat.S_ISCHR(st.st_mode):
        return Rule("c", posix.major(st.st_rdev), posix.minor(st.st_rdev), access)
    if stat.S_ISBLK(st.st_mode):
        return Rule("b", posix.major(st.st_rdev), posix.minor(st.st_rdev), access)
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


# ------------------------------------------------------ the privsep message


def _number(text: str, limit: int) -> int:
    """A decimal 0..``limit`` as ``%d`` writes it; OptionsError otherwise."""
    if not (text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")):
        raise OptionsError(errno.EINVAL)
    value = int(text)
    if value > limit:
        raise OptionsError(errno.EINVAL)
    return value


def _rule_text(rule: Rule) -> str:
    return f"{rule.kind}:{rule.major}:{-1 if rule.minor is None else rule.minor}:{rule.access}"


def _parse_rule(text: str) -> Rule:
    parts = text.split(":")
    if len(parts) != 4 or parts[0] not in ("c", "b") or not _valid_access(parts[3]):
        raise OptionsError(errno.EINVAL)
    kind, major, minor, access = parts
    return Rule(kind, _number(major, _MAJOR_MAX),
                None if minor == "-1" else _number(minor, _MINOR_MAX), access)


def encode(device: DeviceRules, kv: KV) -> None:
    """Add the resolved ``device`` to the privsep message."""
    kv.put_str(_POLICY, device.policy)
    kv.put_int(_COUNT, len(device.rules))
    for i, rule in enumerate(device.rules):
        kv.put_str(f"device.{i}", _rule_text(rule))


def decode(kv: KV) -> DeviceRules | None:
    """The rules in a privsep message (None: no containment, as upstream
    when absent); anything malformed is an OptionsError."""
    names = kv.keys()  # a KV is not a dict: keys() is its only listing
    keys = {name for name in names if name.startswith("device.")}
    if not keys:
        return None
    count = kv.get_int(_COUNT)
    if count is None:
        raise OptionsError(errno.EINVAL)
    if not 0 <= count <= MAX_ENTRIES:
        raise OptionsError(errno.ERANGE)
    policy = kv.get_str(_POLICY)
    if policy not in POLICIES:
        raise OptionsError(errno.EINVAL)
    entries = [f"device.{i}" for i in range(count)]
    if keys != {_COUNT, _POLICY, *entries}:
        raise OptionsError(errno.EINVAL)  # missing or stray entries
    found = []
    for key in entries:
        text = kv.get_str(key)
        if text is None:  # not a string
            raise OptionsError(errno.EINVAL)
        found.append(_parse_rule(text))
    assert policy is not None
    return DeviceRules(policy, tuple(found))
