"""RFC 15 resource-owner options of ``exec``: device policy and limits.

``options`` is unsigned input beside J (flux-core's exec helper copies the
job unit's systemd ``DevicePolicy`` and ``DeviceAllow``).  It is parsed as
upstream's src/imp/exec/device.c parses it, with its one error (EINVAL):

* ``options`` must be an object; unknown keys are ignored;
* ``DevicePolicy``: a string, ``auto`` (default), ``closed`` or ``strict``;
* ``DeviceAllow``: an array whose elements are arrays starting with two
  strings (specifier, access); extra elements are ignored.

``auto`` with no or an empty DeviceAllow means "no containment"; anything
else asks for containment.  The privsep child resolves the pairs itself
and sends the parent the resulting device numbers (devices.py).

Resource limits (not upstream) use the names and D-Bus values of the
systemd unit properties that flux-core's exec helper can copy: integers
(uint64; 2**64-1 is "infinity") or the string ``"infinity"``:

* ``MemoryMax`` (bytes) -> ``memory.max``;
* ``TasksMax`` (processes) -> ``pids.max``;
* ``CPUQuotaPerSecUSec`` (CPU microseconds per second) -> ``cpu.max``.

Anything else of another type or out of range is EINVAL.  They apply only
to a job cgroup (``[exec.cgroup]``, privileged/contain/cgroup.py); without one they are
ignored, as upstream ignores every unknown key.
"""

from __future__ import annotations

import errno
import posix

from ..sign.kv import KV

# The exec child imports this module: dataclasses and typing would cost it
# milliseconds of start-up, so types are for mypy only.
TYPE_CHECKING = False  # mypy reads this as true
if TYPE_CHECKING:
    from typing import Dict, Optional

    from .unprivileged.jsonin import Absent, Json

POLICIES = ("auto", "closed", "strict")
_LIMIT = "limit."  # limit.<Name> = decimal value or "infinity"

LIMIT_NAMES = ("MemoryMax", "TasksMax", "CPUQuotaPerSecUSec")
_INFINITY = 2**64 - 1  # systemd's CGROUP_LIMIT_MAX on D-Bus
if TYPE_CHECKING:
    Limits = Dict[str, Optional[int]]  # name -> value; None is "infinity"
else:
    Limits = dict  # the same at run time, without typing


class OptionsError(Exception):
    """Bad options or a bad kv encoding of them; ``strerror`` is the message."""

    def __init__(self, code: int) -> None:
        super().__init__(posix.strerror(code))
        self.strerror = posix.strerror(code)


class DevicePolicy(tuple[str, "tuple[tuple[str, str], ...]"]):
    """A named tuple (``policy, allow``) without dataclasses or typing:
    ``policy`` is one of POLICIES, ``allow`` the (specifier, access) pairs
    as requested."""

    __slots__ = ()

    def __new__(cls, policy: str, allow: tuple[tuple[str, str], ...]) -> DevicePolicy:
        return tuple.__new__(cls, (policy, allow))

    @property
    def policy(self) -> str:
        return self[0]

    @property
    def allow(self) -> tuple[tuple[str, str], ...]:
        return self[1]

    def __repr__(self) -> str:
        return f"DevicePolicy(policy={self.policy!r}, allow={self.allow!r})"

    @property
    def contained(self) -> bool:
        """True when the resource owner asked for any device restriction."""
        return not (self.policy == "auto" and not self.allow)


NO_CONTAINMENT = DevicePolicy("auto", ())


def from_options(options: Json | Absent) -> DevicePolicy:
    """The device policy that ``options`` asks for; OptionsError(EINVAL)."""
    from .unprivileged.jsonin import (
        ABSENT,  # here: only the child parses JSON, the parent never loads it
    )

    if options is ABSENT:
        return NO_CONTAINMENT
    if not isinstance(options, dict):
        raise OptionsError(errno.EINVAL)
    policy = options.get("DevicePolicy", "auto")
    if not isinstance(policy, str) or policy not in POLICIES:
        raise OptionsError(errno.EINVAL)
    allow = options.get("DeviceAllow", [])
    if not isinstance(allow, list):
        raise OptionsError(errno.EINVAL)
    if policy == "auto" and not allow:
        return NO_CONTAINMENT
    pairs = []
    for entry in allow:
        if not (isinstance(entry, list) and len(entry) >= 2
                and isinstance(entry[0], str) and isinstance(entry[1], str)):
            raise OptionsError(errno.EINVAL)
        if "\0" in entry[0] or "\0" in entry[1]:
            raise OptionsError(errno.EINVAL)  # C strings cannot hold one (jansson refuses it)
        pairs.append((entry[0], entry[1]))
    return DevicePolicy(policy, tuple(pairs))


# ------------------------------------------------------------ resource limits


def limits_from_options(options: Json | Absent) -> Limits:
    """The limits ``options`` asks for (call after from_options accepted it)."""
    if not isinstance(options, dict):
        return {}
    return {name: _limit(options[name]) for name in LIMIT_NAMES if name in options}


def _limit(value: object) -> int | None:
    if value == "infinity" or (type(value) is int and value == _INFINITY):
        return None
    if type(value) is not int or not 0 <= value < _INFINITY:  # bool is not a limit
        raise OptionsError(errno.EINVAL)
    return value


def encode_limits(limits: Limits, kv: KV) -> None:
    for name, value in limits.items():
        kv.put_str(_LIMIT + name, "infinity" if value is None else str(value))


def decode_limits(kv: KV) -> Limits:
    """The limits in a privsep message; unknown names or bad values: EINVAL."""
    limits: Limits = {}
    names = kv.keys()  # a KV is not a dict: keys() is its only listing
    for key in names:
        if not key.startswith(_LIMIT):
            continue
        name, text = key[len(_LIMIT):], kv.get_str(key)
        if name not in LIMIT_NAMES or name in limits or text is None:
            raise OptionsError(errno.EINVAL)
        if text == "infinity":
            limits[name] = None
        elif text.isdigit() and text.isascii():
            limits[name] = _limit(int(text))
        else:
            raise OptionsError(errno.EINVAL)
    return limits
