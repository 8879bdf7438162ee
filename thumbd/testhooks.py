"""Fault injection for the test suite: inert unless its environment variables are set.

No real input reliably crashes or hangs Pillow's decoders (those that did are fixed), yet the
daemon's answers to a decoder that kills its process or never returns must be tested with the
real daemon. So a worker whose environment has

- THUMBD_TEST_CRASH_MARKER=<text> calls os.abort() on a source that contains <text>,
- THUMBD_TEST_HANG_MARKER=<text> sleeps forever on a source that contains <text>,

exactly as a crashing or hung native decoder would look from outside. Without the variables
(production) `trip` returns at once and reads nothing.
"""

from __future__ import annotations

import os
import time
from typing import IO

_CRASH = os.environ.get("THUMBD_TEST_CRASH_MARKER", "").encode()
_HANG = os.environ.get("THUMBD_TEST_HANG_MARKER", "").encode()


def trip(f: IO[bytes]) -> None:
    """Crash or hang if the source carries a test marker; otherwise do nothing."""
    if not (_CRASH or _HANG):
        return
    data = f.read()
    f.seek(0)
    if _CRASH and _CRASH in data:
        os.abort()
    if _HANG and _HANG in data:
        while True:
            time.sleep(3600)


def hooks_enabled() -> bool:
    """THUMBD_TEST_HOOKS=1: the daemon takes SIGUSR2 as "stop the observer thread" (a crash)."""
    return os.environ.get("THUMBD_TEST_HOOKS") == "1"
