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
        self._fd, stale = _take(self.path)
        if stale is not None and stale != os.getpid():
            self.stale = stale  # logged by the caller: logging may not be set up yet
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked, so no one else's file is removed
        os.close(self._fd)
        self._fd = None


def _take(path: Path) -> tuple[int, int | None]:
    """Open and lock `path`, write our pid into it: (its fd, the pid it named before), or
    AlreadyRunning naming the pid of the process that holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        lock(fd)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise AlreadyRunning(path, pid) from None
    before = _read_pid(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, before


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


class StateLock:
    """A daemon's hold on its state folder: one daemon per state, whatever happens to the files.

    `daemon.lock` (what `thumbd status` and `stop` probe) is an ordinary file: an `rm` of it, or
    of the state folder's contents, under a running daemon would let a second daemon lock a new
    file of that name and run beside the first. So the folder itself is locked too (flock works
    on a folder's descriptor), and no rm of a file inside can take that away. `keep()` makes
    the lock file again when it is gone or replaced, so that status and stop still find the
    daemon. (A filesystem without flock on folders, such as NFS, keeps the file lock only.)
    """

    NAME = "daemon.lock"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / self.NAME
        self._folder_fd: int | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock the folder and the lock file, and write our pid; AlreadyRunning otherwise."""
        self._folder_fd = self._lock_folder()
        self._fd = self._lock_file()

    def keep(self) -> bool:
        """Lock the folder and make the lock file again if either was removed or replaced
        (`rm daemon.lock`, `rm -r` of the state folder); True when something was."""
        renewed = False
        if self._folder_fd is not None and not _same_file(self.folder, self._folder_fd):
            old_folder, self._folder_fd = self._folder_fd, self._lock_folder()
            os.close(old_folder)
            renewed = True
        if self._fd is not None and not _same_file(self.path, self._fd):
            old, self._fd = self._fd, self._lock_file()
            os.close(old)
            renewed = True
        return renewed

    def _lock_folder(self) -> int | None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.path, self._pid_in_file()) from None
        except OSError:
            os.close(fd)  # no flock on folders here (NFS): the file lock alone
            return None
        return fd

    def _lock_file(self) -> int:
        return _take(self.path)[0]

    def _pid_in_file(self) -> int | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return _read_pid(fd)
        finally:
            os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
