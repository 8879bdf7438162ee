"""The watchdog side: turn filesystem events into messages for the daemon's main loop.

The handler runs on watchdog's observer thread, and in watchdog an exception there kills the
observer for good, so it does as little as possible (make the path relative, put a message on a
queue) and never lets an exception out. After a kernel queue overflow watchdog delivers nothing
for the lost events, only an EventsLostEvent, queued behind the events it read before the loss:
it becomes an Overflow message, and the daemon rescans. Where it falls matters. An open read
before the loss arrives before it, so the daemon forgets that open with the others (its close
may be among what was lost). watchdog's reader thread also logs a warning as soon as it reads
the overflow, while events read before it are still on their way; taking that warning as the
loss (as thumbd once did) forgot the opens too early, and an open that arrived after it held
its file for HOLD_OPEN. A log filter now only keeps those warnings (one per overflow, thousands
in a flood) out of the log: the daemon logs its own line, once per rescan.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import queue
from dataclasses import dataclass, field
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirMovedEvent,
    EventsLostEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from thumbd.intake.scanner import listable

log = logging.getLogger("thumbd.watcher")

# The events Handler acts on (watches on new folders do not depend on this list). Opens and
# read-only closes are asked for so that a file still open for writing is not taken (settle.py):
# they cost two more events in the kernel's queue for each file a worker reads and each folder a
# scan lists (watchdog drops the folders' own).
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileOpenedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirMovedEvent,
    DirCreatedEvent,
    DirAttribEvent,
    EventsLostEvent,  # the kernel queue overflowed
]


OBSERVERS = itertools.count(1)  # each observer started numbers its events


@dataclass(frozen=True, slots=True)
class FsEvent:
    """Something happened to a path (relative to incoming/)."""

    rel: str
    closed: bool | None  # True: closed after writing or renamed into place; False: written
    deleted: bool = False
    opens: int = 0  # +1 opened, -1 closed (after writing, with closed=True, or reading only)
    # The folder watched, and which observer saw it: events queued by the watcher of an earlier
    # incoming/ are stale, and an earlier observer's opens may never see their close.
    root: str = field(default="", compare=False)
    observer: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class DirArrived:
    """A folder was moved in: its files are complete and need a look."""

    rel: str


@dataclass(frozen=True, slots=True)
class Moved:
    """A file or folder was renamed or moved within incoming/ (one rename: its thumbnails
    follow it)."""

    src: str
    dest: str
    folder: bool
    root: str = field(default="", compare=False)  # the folder watched, as FsEvent's


@dataclass(frozen=True, slots=True)
class DirGone:
    """A folder was moved out of incoming/: inotify says nothing about the files it took
    along."""

    rel: str


@dataclass(frozen=True, slots=True)
class Unlisted:
    """A folder that cannot be listed (no read or search permission for thumbd): inotify
    cannot watch it either, and watchdog does not try again when that changes."""

    rel: str


@dataclass(frozen=True, slots=True)
class DirChanged:
    """A folder's attributes changed (chmod, chown): one thumbd could not list may be
    readable now."""

    rel: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """Events were lost; only a scan can find what they were about."""


class Handler(FileSystemEventHandler):
    def __init__(self, root: str, inbox: queue.SimpleQueue[Any], observer: int = 0) -> None:
        self.root = root
        self.inbox = inbox
        self.observer = observer

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # an exception here would kill the observer thread
            log.exception("cannot handle %r", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, EventsLostEvent):
            self.inbox.put(Overflow())
            return
        if isinstance(event, FileMovedEvent | DirMovedEvent):
            src = self._rel(str(event.src_path)) if event.src_path else None
            dest = self._rel(str(event.dest_path)) if event.dest_path else None
            if src is not None and dest is not None:
                # Within the tree: the thumbnails follow. watchdog follows a folder's move with
                # a made-up move of everything in it (is_synthetic); the folder's covers them.
                if not event.is_synthetic:
                    self.inbox.put(Moved(src, dest, event.is_directory, self.root))
                return
            if not event.is_directory:
                if src is not None:
                    self.inbox.put(FsEvent(src, None, deleted=True))
                if dest is not None:
                    self.inbox.put(FsEvent(dest, True))
                return
            if src is not None:
                self.inbox.put(DirGone(src))
            if dest is not None:
                self.inbox.put(DirArrived(dest))
            return
        if event.is_directory:
            rel = self._rel(str(event.src_path))
            if rel is None:
                return
            if isinstance(event, DirAttribEvent):
                self.inbox.put(DirChanged(rel))
            elif isinstance(event, DirCreatedEvent) and not listable(str(event.src_path)):
                self.inbox.put(Unlisted(rel))
            return
        if isinstance(event, FileDeletedEvent):
            self._put(str(event.src_path), None, deleted=True)
        elif isinstance(event, FileClosedEvent):
            self._put(str(event.src_path), True, opens=-1)
        elif isinstance(event, FileOpenedEvent):
            self._put(str(event.src_path), None, opens=1)
        elif isinstance(event, FileClosedNoWriteEvent):
            self._put(str(event.src_path), None, opens=-1)
        elif event.event_type == "modified":
            self._put(str(event.src_path), False)
        elif event.event_type in ("created", "attrib"):
            # A path the daemon does not track yet starts as not closed anyway. One it does
            # track as complete got here in a folder moved in: watchdog follows that move with
            # a made-up `created` per file, which must not make the file wait for quiet_seconds.
            self._put(str(event.src_path), None)

    def _put(
        self, path: str, closed: bool | None, deleted: bool = False, *, opens: int = 0
    ) -> None:
        rel = self._rel(path)
        if rel is not None:
            self.inbox.put(FsEvent(rel, closed, deleted, opens, self.root, self.observer))

    def _rel(self, path: str) -> str | None:
        rel = os.path.relpath(path, self.root)
        return None if rel == "." or rel.startswith("..") else rel


class _OverflowFilter(logging.Filter):
    """Keeps watchdog's 'queue overflowed' warnings out of the log: the EventsLostEvent that
    follows is the message, and the daemon logs its own line, once per rescan."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "overflow" not in record.getMessage().lower()


class Watcher:
    """Starts, supervises and stops the observer thread for incoming/."""

    def __init__(self, root: str, inbox: queue.SimpleQueue[Any], *, polling: bool) -> None:
        self.root = root
        self.inbox = inbox
        self.polling = polling
        self.observer: BaseObserver | None = None
        self.generation = 0  # of the observer running: one of this process's OBSERVERS
        self._filter = _OverflowFilter()
        self._loggers = [
            logging.getLogger("watchdog.observers.inotify_c"),
            logging.getLogger("watchdog.observers.inotify"),
        ]

    def start(self) -> None:
        for lg in self._loggers:
            lg.addFilter(self._filter)
        self.observer = self._start_observer()

    def alive(self) -> bool:
        return self.observer is not None and self.observer.is_alive()

    def restart(self) -> None:
        log.error("the observer thread died; restarting it and rescanning")
        self._stop_observer()
        self.observer = self._start_observer()

    def stop(self) -> None:
        self._stop_observer()
        for lg in self._loggers:
            lg.removeFilter(self._filter)

    def _stop_observer(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            if self.observer.is_alive():
                self.observer.join(timeout=10)
            self.observer = None

    def check_limits(self) -> None:
        """Fall back to polling if folders created since the start found the watch limit."""
        if self.polling or self.observer is None:
            return
        problem = _watch_limit_reached(self.root)
        if problem is not None:
            self._explain_limit(problem)
            self._stop_observer()
            self.polling = True
            self.observer = self._start_observer()

    def _start_observer(self) -> BaseObserver:
        if not self.polling:
            observer = _inotify_observer()
            try:
                self._schedule(observer)
                # watchdog adds the watches for sub-folders itself and drops their errors
                # (it raises only for the root), so a tree beyond the limit would be watched
                # in part, silently. One more watch tells whether the limit was reached.
                problem = _watch_limit_reached(self.root)
                if problem is None:
                    return observer
                raise problem
            except OSError as e:
                _stop_quietly(observer)
                if e.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                self._explain_limit(e)
                self.polling = True
        return self._schedule(PollingObserver(timeout=1.0))

    def _schedule(self, observer: BaseObserver) -> BaseObserver:
        observer.name = "observer"
        # The folder itself, not a symlink to it: watchdog watches without following links
        # (IN_DONT_FOLLOW), so a watch on the link would see nothing happen inside.
        root = os.path.realpath(self.root)
        self.generation = next(OBSERVERS)
        handler = Handler(root, self.inbox, self.generation)
        observer.schedule(handler, root, recursive=True, event_filter=EVENTS)
        observer.start()
        return observer

    def _explain_limit(self, e: OSError) -> None:
        folders = sum(1 for _ in os.walk(self.root))
        if e.errno == errno.ENOSPC:
            log.error(
                "inotify watch limit reached: %s has %d folders but fs.inotify.max_user_watches "
                "is %s (for all of this user's programs together); raise it (sysctl "
                "fs.inotify.max_user_watches=%d). Falling back to polling, which is slower and "
                "has no close events.",
                self.root,
                folders,
                _watch_limit(),
                max(folders * 2, 65536),
            )
        else:
            log.error(
                "inotify instance limit reached (fs.inotify.max_user_instances is %s); raise it. "
                "Falling back to polling.",
                _read_sysctl("max_user_instances"),
            )


def _inotify_observer() -> BaseObserver:
    # Full events: a file moved in from outside the tree arrives as a move with no source
    # (a complete file) rather than as a bare 'created' that looks like a writer starting.
    from watchdog.observers.inotify import InotifyObserver

    return InotifyObserver(generate_full_events=True)


def _stop_quietly(observer: BaseObserver) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=5)
    except Exception:
        log.debug("stopping a failed observer", exc_info=True)


def _watch_limit_reached(root: str) -> OSError | None:
    """Try to add one more inotify watch, in an instance of its own: the error if that fails
    for the watch limit (ENOSPC: fs.inotify.max_user_watches), else None."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_CLOEXEC)
    if fd < 0:
        return None  # no instance to spare: says nothing about the watches of ours
    try:
        if libc.inotify_add_watch(fd, os.fsencode(root), _IN_ATTRIB) >= 0:
            return None
        err = ctypes.get_errno()
        return OSError(err, os.strerror(err)) if err == errno.ENOSPC else None
    finally:
        os.close(fd)


_IN_ATTRIB = 0x00000004


def _watch_limit() -> str:
    """The watch limit in force: the sysctl, or a user namespace's lower one (containers)."""
    limits = [_read_sysctl("max_user_watches"), _read_file("/proc/sys/user/max_inotify_watches")]
    numbers = [int(v) for v in limits if v.isdigit()]
    return str(min(numbers)) if numbers else "unknown"


def _read_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _read_sysctl(name: str) -> str:
    try:
        with open(f"/proc/sys/fs/inotify/{name}") as f:
            return f.read().strip()
    except OSError:
        return "unknown"
