"""Landlock (Linux 5.13+): let this process write only under one directory, and optionally make
no TCP connection and signal no process outside its sandbox. Standard library only (ctypes).

``abi()`` asks the kernel which version it supports (0: none). ``restrict()`` is irreversible
for this process and its children.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["abi", "restrict"]

_SYSCALLS = {  # create_ruleset, add_rule, restrict_self
    "x86_64": (444, 445, 446),
    "aarch64": (444, 445, 446),
    "riscv64": (444, 445, 446),
}
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_WRITE_FILE = 1 << 1
_REMOVE_DIR, _REMOVE_FILE = 1 << 4, 1 << 5
_MAKES = sum(1 << bit for bit in range(6, 13))  # char, dir, reg, sock, fifo, block, sym
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi() -> int:
    """The Landlock ABI version the kernel offers, 0 when it offers none."""
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None:
        return 0
    version = _libc().syscall(numbers[0], None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(0, int(version))


def restrict(workdir: str, *, deny_tcp: bool, version: int) -> None:
    """Allow writes only beneath ``workdir`` (and to /dev/null); with ``deny_tcp`` also forbid
    TCP connect/bind (ABI 4+) and, on ABI 6+, abstract unix sockets and signals outside."""
    libc = _libc()
    create, add_rule, restrict_self = _SYSCALLS[os.uname().machine]
    writes = _write_rights(version)
    attr = _RulesetAttr(writes, 0, 0)
    size = 8
    if deny_tcp and version >= 4:
        attr.handled_access_net, size = _NET_BIND_TCP | _NET_CONNECT_TCP, 16
    if deny_tcp and version >= 6:
        attr.scoped, size = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL, 24
    ruleset = _check(libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    try:
        _allow(libc, add_rule, ruleset, workdir, writes)
        _allow(libc, add_rule, ruleset, "/dev/null", writes & (_WRITE_FILE | _TRUNCATE))
        _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        _check(libc.syscall(restrict_self, ruleset, 0))
    finally:
        os.close(ruleset)


def _write_rights(version: int) -> int:
    rights = _WRITE_FILE | _REMOVE_DIR | _REMOVE_FILE | _MAKES
    if version >= 2:
        rights |= _REFER
    if version >= 3:
        rights |= _TRUNCATE
    return rights


def _allow(libc: ctypes.CDLL, add_rule: int, ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneath(rights, fd)
        _check(libc.syscall(add_rule, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0))
    finally:
        os.close(fd)


def _check(result: int) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"landlock: {os.strerror(errno)}")
    return result
