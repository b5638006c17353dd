"""A ``BPF_PROG_TYPE_CGROUP_DEVICE`` program: the device allow-list of a
cgroup (RFC 15 "Device Containment"; the kernel's replacement for cgroup
v1's devices.allow).

No maintained pure-Python BPF assembler exists (bcc and libbpf bindings
need clang or a compiled libbpf), and the program is tiny, so it is built
here instruction by instruction and loaded with the bpf(2) syscall.

The kernel calls the program for every device access with a
``struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }``
where ``access_type = (access << 16) | type``; it returns 1 to allow, 0 to
deny.  Our program is default-deny: for each rule, if the type, major and
(unless a wildcard) minor match and the requested access is a subset of
the rule's, it returns 1.
"""

from __future__ import annotations

import errno
import posix
import struct
import sys

from ...devices import Rule

# Device types and access bits of struct bpf_cgroup_dev_ctx (linux/bpf.h).
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}

# Instruction classes, operations and sources (linux/bpf_common.h, bpf.h).
_LDX, _ALU, _JMP, _ALU64 = 0x01, 0x04, 0x05, 0x07
_W, _MEM = 0x00, 0x60  # 32-bit word, memory mode
_K, _X = 0x00, 0x08  # immediate / register source
_AND, _RSH, _MOV = 0x50, 0x70, 0xB0
_JNE, _EXIT = 0x50, 0x90

# bpf(2) commands, program and attach types.
_PROG_LOAD, _PROG_ATTACH = 5, 8
_PROG_TYPE_CGROUP_DEVICE, _ATTACH_CGROUP_DEVICE = 15, 6
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
_LICENSE = b"GPL\0"  # the verifier wants a license; no GPL-only helper is used
_LOG_SIZE = 1 << 16


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn``: u8 code, u8 dst:4 src:4, s16 off, s32 imm."""
    regs = dst | src << 4 if sys.byteorder == "little" else dst << 4 | src
    return struct.pack("=BBhi", code, regs, off, imm)


def _rule(rule: Rule) -> list[bytes]:
    """The instructions of one rule; every failed test jumps past the rule."""
    kind = DEV_BLOCK if rule.kind == "b" else DEV_CHAR
    allowed = sum(_ACCESS_BITS[c] for c in set(rule.access))
    body: list[tuple[int, int, int, int | None, int]] = [
        # w5 = w4 & 0xffff: the device type; if w5 != kind: next rule
        (_ALU | _MOV | _X, 5, 4, 0, 0),
        (_ALU | _AND | _K, 5, 0, 0, 0xFFFF),
        (_JMP | _JNE | _K, 5, 0, None, kind),
        # if r2 (major) != rule's major: next rule
        (_JMP | _JNE | _K, 2, 0, None, rule.major),
    ]
    if rule.minor is not None:
        # if r3 (minor) != rule's minor: next rule
        body.append((_JMP | _JNE | _K, 3, 0, None, rule.minor))
    body += [
        # w5 = (w4 >> 16) & ~allowed: requested access bits not granted
        (_ALU | _MOV | _X, 5, 4, 0, 0),
        (_ALU | _RSH | _K, 5, 0, 0, 16),
        (_ALU | _AND | _K, 5, 0, 0, ~allowed & 0x7),
        (_JMP | _JNE | _K, 5, 0, None, 0),
        # r0 = 1; exit: allow
        (_ALU64 | _MOV | _K, 0, 0, 0, 1),
        (_JMP | _EXIT, 0, 0, 0, 0),
    ]
    # off=None: "next rule", i.e. over the rest of this rule's instructions.
    return [_insn(code, dst, src, len(body) - i - 1 if off is None else off, imm)
            for i, (code, dst, src, off, imm) in enumerate(body)]


def program(rules: list[Rule]) -> bytes:
    """The whole program: load the context, test each rule, deny by default."""
    insns = [
        _insn(_LDX | _MEM | _W, 2, 1, 4),  # r2 = ctx->major
        _insn(_LDX | _MEM | _W, 3, 1, 8),  # r3 = ctx->minor
        _insn(_LDX | _MEM | _W, 4, 1, 0),  # r4 = ctx->access_type
    ]
    for rule in rules:
        insns += _rule(rule)
    insns += [
        _insn(_ALU64 | _MOV | _K, 0, 0, 0, 0),  # r0 = 0: deny
        _insn(_JMP | _EXIT),  # exit
    ]
    return b"".join(insns)


def _bpf(cmd: int, attr: bytes) -> int:
    """bpf(2); the result, or OSError."""
    import ctypes  # only when containment is applied

    number = _SYS_BPF.get(posix.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"bpf(2) syscall number unknown on {posix.uname().machine}")
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, 128)  # the kernel wants the tail zeroed
    rc = int(libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), buf,
                          ctypes.c_uint(len(buf))))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, posix.strerror(err))
    return rc


def attach(cgroup: str, rules: list[Rule]) -> None:
    """Load the program and attach it to ``cgroup`` (flags 0: it replaces any
    program of ours there and the cgroup's children cannot override it)."""
    import ctypes

    text = program(rules)
    code = ctypes.create_string_buffer(text, len(text))
    license = ctypes.create_string_buffer(_LICENSE)
    verifier_log = ctypes.create_string_buffer(_LOG_SIZE)
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license,
    # log_level, log_size, log_buf, kern_version, prog_flags, prog_name.
    load = struct.pack("=IIQQIIQII16s", _PROG_TYPE_CGROUP_DEVICE, len(text) // 8,
                       ctypes.addressof(code), ctypes.addressof(license),
                       1, _LOG_SIZE, ctypes.addressof(verifier_log), 0, 0, b"flux_imp_dev")
    try:
        prog = _bpf(_PROG_LOAD, load)
    except OSError as exc:
        detail = verifier_log.value.decode(errors="replace").strip().splitlines()
        raise OSError(exc.errno, f"load: {exc.strerror}" +
                      (f" ({detail[-1]})" if detail else "")) from None
    try:
        fd = posix.open(cgroup, posix.O_RDONLY | posix.O_DIRECTORY)
        try:
            # BPF_PROG_ATTACH: target_fd, attach_bpf_fd, attach_type, attach_flags.
            _bpf(_PROG_ATTACH, struct.pack("=IIII", fd, prog, _ATTACH_CGROUP_DEVICE, 0))
        finally:
            posix.close(fd)
    finally:
        posix.close(prog)  # the attachment keeps the program alive
