"""Confining a resize worker with Landlock before it opens a source: a decoder bug it exploits
can read the sources and the code, and nothing else; it can write nowhere and reach no one.

Why raw system calls through ctypes: the `landlock` package on PyPI (1.0.0.dev5) knows file
rules only, and a worker must also lose TCP `connect()` and `bind()` (Landlock ABI 4) and the
right to signal or reach abstract Unix sockets outside itself (ABI 6). The kernel interface is
three calls and three small structures, so a typed module is less code than a dependency plus
ctypes for the rest, and works the same on every ABI from 1 to 7.

What a confined worker may do (everything else Landlock knows of is refused):

- read (and map for execution) files below the incoming folder, Python's prefixes and the
  folders on `sys.path`, and the system's library folders (decoders `dlopen` codecs and
  plugins lazily, and Python imports modules the first time a file needs them);
- use what it holds already: its pipe to the daemon, fd 2, memory files (`memfd_create`, not a
  path: what the worker captures of fd 2 goes there).

Besides Landlock: `PR_SET_NO_NEW_PRIVS` (also what lets an unprivileged process restrict
itself) and no core dumps (a crashing decoder would otherwise write one with a source's
pixels in it, wherever `core_pattern` says).

A kernel without Landlock (older than 5.13, or `lsm=` without it) leaves only those two; the
daemon says so once at start-up and `thumbd status` shows "sandbox: off".
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass

import thumbd
from thumbd import testhooks

# x86_64 and aarch64 share these numbers (the generic syscall table has them too).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights, by the ABI that introduced them.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1

_READ = FS_READ_FILE | FS_READ_DIR | FS_EXECUTE
_READ_ONLY_FILE = FS_READ_FILE | FS_EXECUTE  # the rights a rule on a file (not a folder) may have

# What Python and the decoders' libraries read after the fork (imports, dlopen, ld.so.cache).
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/etc/ld.so.cache")


class SandboxError(OSError):
    """Landlock was there but refused a step: the worker must not run unconfined."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in <linux/landlock.h>
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


def abi() -> int:
    """The kernel's Landlock ABI version, or 0 when it has none (or this is not Linux x86_64 /
    aarch64, whose syscall numbers these are)."""
    if testhooks.no_landlock() or platform.machine() not in ("x86_64", "aarch64"):
        return 0
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(0, int(version))


@dataclass(frozen=True, slots=True)
class Status:
    """What a worker's confinement covers on this kernel, for the log and `thumbd status`."""

    abi: int

    @property
    def on(self) -> bool:
        return self.abi >= 1

    def describe(self) -> str:
        if not self.on:
            return "off (the kernel has no Landlock)"
        if self.abi < 4:
            return f"files only (Landlock ABI {self.abi}: no network rules)"
        return f"on (Landlock ABI {self.abi})"


def status() -> Status:
    return Status(abi())


def confine(readable: Iterable[str]) -> Status:
    """Confine this process for good: read-only below `readable` (and what Python needs), no
    writes, no TCP, no core dumps, no new privileges. Returns what applied."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SandboxError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    found = status()
    if not found.on:
        return found
    ruleset = _create_ruleset(found.abi)
    try:
        for path in _with_python(readable):
            _allow_read(ruleset, path)
        if _libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
            raise SandboxError(ctypes.get_errno(), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return found


def _create_ruleset(version: int) -> int:
    fs = _FS_ABI1
    if version >= 2:
        fs |= _FS_REFER
    if version >= 3:
        fs |= _FS_TRUNCATE
    if version >= 5:
        fs |= _FS_IOCTL_DEV
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if version >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if version >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)
    # The kernel takes a prefix of the structure: older ABIs know fewer fields.
    size = ctypes.sizeof(attr) if version >= 6 else (16 if version >= 4 else 8)
    fd = int(_libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if fd < 0:
        raise SandboxError(ctypes.get_errno(), "landlock_create_ruleset")
    return fd


def _with_python(readable: Iterable[str]) -> list[str]:
    """The paths given, Python's own and the system's, each once, those that exist. Not the
    current folder, which `python -m` puts on sys.path: it may hold anything."""
    here = os.getcwd()
    code = os.path.dirname(os.path.dirname(os.path.abspath(thumbd.__file__)))
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, code, *sysconfig.get_paths().values()]
    python += [p for p in sys.path if p and os.path.abspath(p) != here]
    seen: dict[str, None] = {}
    for path in [*readable, *python, *SYSTEM_READ]:
        if path and os.path.exists(path):
            seen.setdefault(os.path.realpath(path), None)
    return list(seen)


def _allow_read(ruleset: int, path: str) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rights = _READ if os.path.isdir(path) else _READ_ONLY_FILE
        rule = _PathBeneathAttr(rights, fd)
        if _libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            raise SandboxError(ctypes.get_errno(), f"landlock_add_rule({path})")
    finally:
        os.close(fd)
