"""Device containment (options DevicePolicy/DeviceAllow; devices.py,
bpf.py): the program's semantics by a small interpreter of the
instructions we emit, the resolution of entries, and, as root, the real
thing inside a dedicated test cgroup (never the machine's root cgroup)."""

from __future__ import annotations

import os
import pwd
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_imp.imp import devices
from flux_imp.imp.devices import DeviceRules, Rule
from flux_imp.imp.log import ImpError
from flux_imp.imp.options import DevicePolicy, OptionsError
from flux_imp.imp.privileged.contain import bpf
from flux_imp.imp.privileged.contain import cgroup as jobcgroup
from flux_imp.imp.privileged.contain import setup as containment
from flux_imp.imp.privileged.contain.bpf import ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_BLOCK, DEV_CHAR
from flux_imp.sign.kv import KV

from .containment_helpers import (
    JOBID,
    dedicated_cgroup,
    job_cgroup_of,
    make_setup,
    outcome,
    start,
)  # fmt: skip
from .impenv import ImpInstall
from .jobs import ExecSetup

# -- the program, run by a model of the eBPF instructions we emit -----------


def run_program(code: bytes, access: int, kind: int, major: int, minor: int) -> int:
    """Execute ``code`` on a bpf_cgroup_dev_ctx; the return value (r0)."""
    ctx = struct.pack("=III", access << 16 | kind, major, minor)
    regs = [0] * 11
    pc = 0
    for _ in range(10_000):
        op, reg, off, imm = struct.unpack_from("=BBhi", code, pc * 8)
        dst, src = reg & 0xF, reg >> 4
        pc += 1
        if op == 0x61:  # ldx w: dst = *(u32 *)(ctx + off); r1 is the context
            assert src == 1
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif op == 0xBC:  # mov32 reg
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif op == 0x54:  # and32 imm
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif op == 0x74:  # rsh32 imm
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif op == 0xB7:  # mov64 imm
            regs[dst] = imm
        elif op == 0x55:  # jne imm
            if regs[dst] != imm:
                pc += off
        elif op == 0x95:  # exit
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
    raise AssertionError("no exit")


RULES = [Rule("c", 1, 3, "rw"), Rule("b", 8, None, "r"), Rule("c", 136, None, "rwm")]
R, W, M = ACC_READ, ACC_WRITE, ACC_MKNOD


@pytest.mark.parametrize(("access", "kind", "major", "minor", "allowed"), [
    (R, DEV_CHAR, 1, 3, 1), (R | W, DEV_CHAR, 1, 3, 1), (M, DEV_CHAR, 1, 3, 0),
    (R, DEV_CHAR, 1, 5, 0), (R, DEV_BLOCK, 1, 3, 0),
    (R, DEV_BLOCK, 8, 0, 1), (R, DEV_BLOCK, 8, 17, 1), (W, DEV_BLOCK, 8, 0, 0),
    (R, DEV_CHAR, 8, 0, 0), (R | W | M, DEV_CHAR, 136, 4, 1), (R, DEV_CHAR, 137, 4, 0),
])  # fmt: skip
def test_program_semantics(access: int, kind: int, major: int, minor: int,
                           allowed: int) -> None:
    assert run_program(bpf.program(RULES), access, kind, major, minor) == allowed


def test_empty_program_denies_everything() -> None:
    code = bpf.program([])
    assert len(code) == 5 * 8  # 3 loads, r0 = 0, exit
    assert run_program(code, R, DEV_CHAR, 1, 3) == 0


def test_instruction_encoding() -> None:
    # r2 = *(u32 *)(r1 + 4): opcode 0x61, dst 2, src 1, off 4.
    assert bpf.program([])[:8] == bytes([0x61, 0x12, 4, 0, 0, 0, 0, 0])
    assert len(bpf.program([Rule("c", 1, None, "r")])) == (5 + 10) * 8
    assert len(bpf.program([Rule("c", 1, 3, "r")])) == (5 + 11) * 8


# -- resolving the policy --------------------------------------------------


def test_closed_starts_from_the_baseline() -> None:
    rules = devices.rules(DevicePolicy("closed", ()))
    null = os.stat("/dev/null").st_rdev
    assert Rule("c", os.major(null), os.minor(null), "rwm") in rules
    assert any(rule.minor is None and rule.access == "rw" for rule in rules)  # char-pts


def test_strict_starts_from_nothing() -> None:
    assert devices.rules(DevicePolicy("strict", ())) == []


@pytest.mark.parametrize(("spec", "access", "why"), [
    ("/dev/null", "rx", "invalid access key"), ("/dev/null", "", "invalid access key"),
    ("/dev/null", "rwmr", "invalid access key"), ("null", "r", "unknown specifier"),
    ("/dev/../etc/passwd", "r", "not a device"), ("/dev/nonexistent-x", "r",
                                                  "No such file or directory"),
    ("char-no-such-driver", "r", "not found in /proc/devices"),
    ("/dev/shm", "r", "not a device"),
])  # fmt: skip
def test_unusable_entries_are_skipped_with_a_warning(
    capfd: pytest.CaptureFixture[str], spec: str, access: str, why: str
) -> None:
    assert devices.rules(DevicePolicy("strict", ((spec, access),))) == []
    assert capfd.readouterr().err == f"flux-imp: Warning: device: ignore {spec} ({access}): {why}\n"


def test_device_classes_come_from_proc_devices() -> None:
    assert Rule("c", 1, None, "r") in devices.rules(DevicePolicy("strict", (("char-mem", "r"),)))


class _Cgroup:
    def __init__(self, path: str) -> None:
        self.path, self.unified = path, True


def test_root_cgroup_is_refused_before_anything_is_attached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mount = jobcgroup.cgroup2_mount(str(job_cgroup_of(os.getpid())))
    assert mount is not None

    def trap(*_: Any) -> None:
        raise AssertionError("attach() reached")

    monkeypatch.setattr(bpf, "attach", trap)
    job = containment.Containment(trail=None)  # type: ignore[arg-type]
    imp: Any = type("Imp", (), {"cgroup": _Cgroup(mount + "/")})()
    with pytest.raises(ImpError) as info:
        job._devices(imp, DeviceRules("closed", ()))
    assert info.value.message == (
        "exec: failed to apply device containment policy: refusing to attach a device "
        f"program to the root cgroup {mount}/")


# -- the real thing --------------------------------------------------------


def bpf_refusal() -> str | None:
    """Why the kernel will not attach a device program here, or None."""
    with dedicated_cgroup() as path:
        try:
            bpf.attach(str(path), [])
        except OSError as exc:
            return str(exc)
    return None


@pytest.fixture
def test_cgroup() -> Iterator[Path]:
    if os.getuid() != 0:
        pytest.skip("needs root")
    why = bpf_refusal()
    if why is not None:
        pytest.skip(f"the kernel refuses BPF device programs: {why}")
    with dedicated_cgroup() as path:
        yield path


@pytest.fixture
def setup(imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
          world_tmp: Path) -> ExecSetup:
    return make_setup(imp.test_build, munged, owner, guest, world_tmp)


READ_NULL = "cat /dev/null && echo read-ok"


def test_closed_allows_dev_null(setup: ExecSetup, test_cgroup: Path, world_tmp: Path) -> None:
    opts = {"DevicePolicy": "closed"}
    assert outcome(start(setup, READ_NULL, world_tmp, cgroup=test_cgroup, opts=opts)) == (
        0, "read-ok\n", "")


def test_strict_without_dev_null_denies_it(setup: ExecSetup, test_cgroup: Path,
                                           world_tmp: Path) -> None:
    opts = {"DevicePolicy": "strict", "DeviceAllow": [["/dev/zero", "r"]]}
    code, out, err = outcome(start(setup, READ_NULL + "; head -c1 /dev/zero | wc -c",
                                   world_tmp, cgroup=test_cgroup, opts=opts))
    assert (code, out) == (0, "1\n")
    assert "/dev/null: Operation not permitted" in err


def test_device_program_goes_on_the_job_cgroup(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path, test_cgroup: Path,
) -> None:  # fmt: skip
    setup = make_setup(imp.test_build, munged, owner, guest, world_tmp, "[exec.cgroup]\n")
    opts = {"DevicePolicy": "strict", "DeviceAllow": []}
    code, out, err = outcome(start(setup, READ_NULL, world_tmp, cgroup=test_cgroup, opts=opts))
    assert (code, out) == (1, "")
    assert "/dev/null: Operation not permitted" in err
    # The IMP's own cgroup is untouched: a process there still reads /dev/null.
    assert not (test_cgroup / f"imp-shell-{JOBID}").exists()
    assert outcome(start(setup, READ_NULL, world_tmp, cgroup=test_cgroup)) == (
        0, "read-ok\n", "")


def test_device_containment_is_refused_in_the_root_cgroup(setup: ExecSetup,
                                                          world_tmp: Path) -> None:
    # Upstream would cut the whole machine off its devices here.
    mount = jobcgroup.cgroup2_mount(str(job_cgroup_of(os.getpid())))
    assert mount is not None and jobcgroup.is_root(mount)  # the refusal's own test
    if job_cgroup_of(os.getpid()) != Path(mount):
        pytest.skip("the tests do not run in the root cgroup here")
    code, out, err = outcome(start(setup, "echo ran", world_tmp,
                                   opts={"DevicePolicy": "closed"}))
    assert (code, out) == (1, "")
    assert err == ("flux-imp: Fatal: exec: failed to apply device containment policy: "
                   f"refusing to attach a device program to the root cgroup {mount}/\n")


def test_device_path_the_owner_cannot_reach_is_ignored_like_a_missing_one(
    setup: ExecSetup, test_cgroup: Path, world_tmp: Path
) -> None:
    """The child stats DeviceAllow paths as the owner: a node behind a
    directory only root can search (here /dev/null, through a symlink the
    owner planted in /dev/shm) is no more found than a missing one, so the
    outcome says nothing about what root could see there."""
    hidden = world_tmp / "hidden"
    hidden.mkdir()
    hidden.chmod(0o700)
    (hidden / "null").symlink_to("/dev/null")
    link = Path("/dev/shm") / f"fluximp-test-{secrets.token_hex(4)}"
    opts = {"DevicePolicy": "strict", "DeviceAllow": [[str(link), "r"]]}
    seen = []
    try:
        for target in (hidden / "null", hidden / "missing"):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
            seen.append(outcome(start(setup, READ_NULL, world_tmp, cgroup=test_cgroup,
                                      opts=opts)))  # fmt: skip
    finally:
        link.unlink(missing_ok=True)
    assert seen[0] == seen[1]
    code, out, err = seen[0]
    assert (code, out) == (1, "")
    assert err.startswith(f"flux-imp: Warning: device: ignore {link} (r): Permission denied\n")
    assert "/dev/null: Operation not permitted" in err


def test_rules_round_trip_through_the_privsep_message() -> None:
    device = devices.resolve(DevicePolicy("closed", (("char-mem", "rw"), ("/dev/zero", "r"))))
    assert any(rule.minor is None for rule in device.rules)  # char-pts, char-mem
    kv = KV()
    devices.encode(device, kv)
    assert devices.decode(KV.decode(kv.encode())) == device
    assert devices.decode(KV()) is None  # absent: no containment


def _message(entries: dict[str, str | int]) -> KV:
    kv = KV()
    for key, value in {"device.policy": "strict", **entries}.items():
        if isinstance(value, int):
            kv.put_int(key, value)
        else:
            kv.put_str(key, value)
    return kv


@pytest.mark.parametrize("entry", [
    "c:1:3", "c:1:3:rw:x", "x:1:3:rw", "c:1:3:rwx", "c:1:3:", "c:01:3:rw", "c:+1:3:rw",
    "c: 1:3:rw", "c:1:-2:rw", "c:4096:0:rw", "c:1:1048576:rw", "c:-1:3:rw", "c:١:3:rw",
    "c:1:*:rw",
])  # fmt: skip
def test_parent_refuses_malformed_rules(entry: str) -> None:
    with pytest.raises(OptionsError, match=r"^Invalid argument$"):
        devices.decode(_message({"device.count": 1, "device.0": entry}))


def test_parent_accepts_rules_of_upstreams_form() -> None:
    got = devices.decode(_message({"device.count": 2, "device.0": "c:4095:1048575:rwm",
                                   "device.1": "b:0:-1:m"}))  # fmt: skip
    assert got == DeviceRules("strict", (Rule("c", 4095, 1048575, "rwm"), Rule("b", 0, None, "m")))


@pytest.mark.parametrize(("entries", "why"), [
    ({"device.count": "1", "device.0": "c:1:3:r"}, "Invalid argument"),
    ({"device.count": 1}, "Invalid argument"),  # missing entry
    ({"device.count": 1, "device.0": 5}, "Invalid argument"),  # not a string
    ({"device.count": 0, "device.0": "c:1:3:r"}, "Invalid argument"),  # stray entry
    ({"device.count": 0, "device.policy": "bogus"}, "Invalid argument"),
    ({"device.count": 513}, "Numerical result out of range"),
    ({"device.count": -1}, "Numerical result out of range"),
])  # fmt: skip
def test_parent_refuses_malformed_messages(entries: dict[str, str | int], why: str) -> None:
    with pytest.raises(OptionsError, match=rf"^{why}$"):
        devices.decode(_message(entries))
