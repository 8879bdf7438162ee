"""A pidfile guarded by flock, and the probe that tells whether a daemon holds one.

python-daemon's own pidfile uses the `lockfile` package (O_CREAT|O_EXCL): a pidfile left by a
killed daemon blocks every later start. Here the file's existence means nothing; the lock does.
The kernel drops an flock when its holder dies, however it dies, so a stale pidfile is simply
locked again and rewritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path


class AlreadyRunning(Exception):
    """Another live process holds the lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        super().__init__(f"already running (pid {pid or '?'}; {path} is locked)")
        self.pid = pid


class PidFile:
    """Context manager: lock `path`, write our pid into it; unlock and remove it on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stale: int | None = None  # the pid a stale pidfile named, once replaced
        self._fd: int | None = None

    def __enter__(self) -> PidFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            lock(fd)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(self.path, pid) from None
        stale = _read_pid(fd)
        if stale is not None and stale != os.getpid():
            self.stale = stale  # logged by the caller: logging may not be set up yet
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked, so no one else's file is removed
        os.close(self._fd)
        self._fd = None


def lock(fd: int, attempts: int = 5) -> None:
    """An exclusive flock, retried briefly: a `thumbd status` probing the lock holds it for a
    moment, which must not make a starting daemon give up. Raises BlockingIOError."""
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)


def holder(path: Path) -> int | None:
    """The pid written in `path` if a live process holds its lock, else None.

    Probes with a shared lock: it fails while a daemon holds the exclusive one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
