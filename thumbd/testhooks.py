"""Every test-only switch of thumbd, read here and nowhere else: all inert unless set.

Each is an environment variable named THUMBD_TEST_*, so that the real daemon, started as a
subprocess by the tests, can be steered without a test-only configuration key. Production
modules call the small functions below; none of them changes anything when its variable is
unset. This module stays import-cheap (standard library only): workers and `thumbd status`
import it.

- THUMBD_TEST_CRASH_MARKER=<text>: a worker calls os.abort() on a source that contains <text>;
- THUMBD_TEST_HANG_MARKER=<text>: a worker sleeps forever on a source that contains <text>;
- THUMBD_TEST_SLOW_MARKER=<text>: a worker sleeps a second on a source that contains <text>
  (a render of known length, so that what must happen meanwhile does not race the machine's
  load).
  No real input reliably crashes or hangs Pillow's decoders (those that did are fixed), yet the
  daemon's answers to a decoder that kills its process or never returns must be tested with the
  real daemon: `trip` looks exactly like a crashing or hung native decoder from outside.
- THUMBD_TEST_HOOKS=1: the daemon takes SIGUSR2 as "stop the observer thread" (a crash).
- THUMBD_TEST_RESOLVE="photos.example=127.0.0.1;cdn.example=127.0.0.2,::1": host names the
  downloader resolves to fixed addresses, and
- THUMBD_TEST_PUBLIC="127.0.0.2": addresses the private-address check treats as public. These
  two let the tests prove the address checks against servers on 127.0.0.x without touching
  /etc/hosts.
- THUMBD_TEST_BOOT_ID=<text>: stands in for the machine's boot id (a reboot, for the tests).
- THUMBD_TEST_NO_LANDLOCK=1: the kernel is taken to have no Landlock (the sandbox is off), so
  that a kernel without it can be tested on one with it.
- THUMBD_TEST_ESCAPE_MARKER=<text>: a worker rendering a source that contains
  `<text> read=<path> write=<path> connect=<port>` tries exactly that (read a file, create one,
  connect to 127.0.0.1:<port>), as a decoder an exploit took over would, and fails the source
  with what happened to each try as its reason: the sandbox tested from inside a real worker.
- THUMBD_TEST_REUSE_WINDOW=<seconds>: how long a deleted source's thumbnails stay candidates
  for a new file (output/reuse.py), instead of minutes: the tests see the window close.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable
from typing import IO

# Read once, at import: `trip` runs for every source a worker renders.
_CRASH = os.environ.get("THUMBD_TEST_CRASH_MARKER", "").encode()
_HANG = os.environ.get("THUMBD_TEST_HANG_MARKER", "").encode()
_SLOW = os.environ.get("THUMBD_TEST_SLOW_MARKER", "").encode()
_ESCAPE = os.environ.get("THUMBD_TEST_ESCAPE_MARKER", "").encode()

RESOLVE = "THUMBD_TEST_RESOLVE"
PUBLIC = "THUMBD_TEST_PUBLIC"
BOOT_ID = "THUMBD_TEST_BOOT_ID"


def trip(f: IO[bytes]) -> None:
    """Crash, hang or dawdle if the source carries a test marker; otherwise do nothing."""
    if not (_CRASH or _HANG or _SLOW):
        return
    data = f.read()
    f.seek(0)
    if _CRASH and _CRASH in data:
        os.abort()
    if _HANG and _HANG in data:
        while True:
            time.sleep(3600)
    if _SLOW and _SLOW in data:
        time.sleep(1)


def hooks_enabled() -> bool:
    """THUMBD_TEST_HOOKS=1: the daemon takes SIGUSR2 as "stop the observer thread" (a crash)."""
    return os.environ.get("THUMBD_TEST_HOOKS") == "1"


def resolve_overrides() -> dict[str, list[str]]:
    """THUMBD_TEST_RESOLVE: lower-case host name -> the addresses it resolves to ({} unset)."""
    names: dict[str, list[str]] = {}
    for item in os.environ.get(RESOLVE, "").split(";"):
        name, _, addresses = item.partition("=")
        found = [a.strip() for a in addresses.split(",") if a.strip()]
        if name.strip() and found:
            names[name.strip().lower()] = found
    return names


def public_addresses() -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """THUMBD_TEST_PUBLIC: addresses the private-address check lets through (empty unset)."""
    return frozenset(
        ipaddress.ip_address(a.strip()) for a in os.environ.get(PUBLIC, "").split(",") if a.strip()
    )


def boot_id() -> str | None:
    """THUMBD_TEST_BOOT_ID: the boot id to use instead of the machine's, or None (unset)."""
    return os.environ.get(BOOT_ID) or None


def no_landlock() -> bool:
    """THUMBD_TEST_NO_LANDLOCK=1: behave as on a kernel without Landlock."""
    return os.environ.get("THUMBD_TEST_NO_LANDLOCK") == "1"


def escape(f: IO[bytes]) -> str | None:
    """What became of the tries a source with the escape marker asks for, or None (no marker,
    or THUMBD_TEST_ESCAPE_MARKER unset: then nothing is read)."""
    if not _ESCAPE:
        return None
    data = f.read()
    f.seek(0)
    at = data.find(_ESCAPE)
    if at < 0:
        return None
    asked = dict(word.split(b"=", 1) for word in data[at + len(_ESCAPE) :].split() if b"=" in word)
    tries: dict[str, Callable[[str], object]] = {
        "read": lambda path: open(path, "rb").close(),
        "write": lambda path: open(path, "xb").close(),
        "connect": lambda port: socket.create_connection(("127.0.0.1", int(port)), 5).close(),
    }
    said = []
    for what, attempt in tries.items():
        target = asked.get(what.encode(), b"").decode()
        try:
            attempt(target)
        except PermissionError:
            said.append(f"{what} {target}: refused")
        except OSError as e:
            said.append(f"{what} {target}: failed ({e.strerror})")
        else:
            said.append(f"{what} {target}: done")
    return "escape tries: " + "; ".join(said)


def reuse_window(default: float) -> float:
    """THUMBD_TEST_REUSE_WINDOW: the reuse window in seconds, or `default` when unset."""
    value = os.environ.get("THUMBD_TEST_REUSE_WINDOW")
    return float(value) if value else default
