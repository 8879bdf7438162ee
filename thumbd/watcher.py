"""The watchdog side: turn filesystem events into messages for the daemon's main loop.

The handler runs on watchdog's observer thread, and in watchdog an exception there kills the
observer for good, so it does as little as possible (make the path relative, put a message on a
queue) and never lets an exception out. After a kernel queue overflow watchdog only logs a
warning and delivers nothing for the lost events; a log filter turns that warning into a message
so that the daemon rescans.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
from dataclasses import dataclass
from typing import Any

from watchdog.events import (
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger("thumbd.watcher")

# The events Handler acts on. Asking for these alone matters: by default watchdog also asks
# inotify for every open and every read-only close, so each source a worker reads would wake
# three observer threads twice for nothing, and every file event would bring a "folder modified"
# event along. (Watches on new folders do not depend on this list.)
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirMovedEvent,
]


@dataclass(frozen=True, slots=True)
class FsEvent:
    """Something happened to a path (relative to incoming/)."""

    rel: str
    closed: bool | None  # True: closed after writing or renamed into place; False: written
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class DirArrived:
    """A folder was moved in: its files are complete and need a look."""

    rel: str


@dataclass(frozen=True, slots=True)
class Overflow:
    """Events were lost; only a scan can find what they were about."""


class Handler(FileSystemEventHandler):
    def __init__(self, root: str, inbox: queue.SimpleQueue[Any]) -> None:
        self.root = root
        self.inbox = inbox

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # an exception here would kill the observer thread
            log.exception("cannot handle %r", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, DirMovedEvent):
            if event.dest_path:
                self._put_dir(str(event.dest_path))
            return
        if event.is_directory:
            return
        if isinstance(event, FileMovedEvent):
            if event.src_path:
                self._put(str(event.src_path), None, deleted=True)
            if event.dest_path:
                self._put(str(event.dest_path), True)
        elif isinstance(event, FileDeletedEvent):
            self._put(str(event.src_path), None, deleted=True)
        elif isinstance(event, FileClosedEvent):
            self._put(str(event.src_path), True)
        elif event.event_type in ("created", "modified"):
            self._put(str(event.src_path), False)
        elif event.event_type == "attrib":
            self._put(str(event.src_path), None)

    def _put(self, path: str, closed: bool | None, deleted: bool = False) -> None:
        rel = self._rel(path)
        if rel is not None:
            self.inbox.put(FsEvent(rel, closed, deleted))

    def _put_dir(self, path: str) -> None:
        rel = self._rel(path)
        if rel is not None:
            self.inbox.put(DirArrived(rel))

    def _rel(self, path: str) -> str | None:
        rel = os.path.relpath(path, self.root)
        return None if rel == "." or rel.startswith("..") else rel


class _OverflowFilter(logging.Filter):
    """Turns watchdog's 'queue overflowed' warning into an Overflow message."""

    def __init__(self, inbox: queue.SimpleQueue[Any]) -> None:
        super().__init__()
        self.inbox = inbox

    def filter(self, record: logging.LogRecord) -> bool:
        if "overflow" in record.getMessage().lower():
            self.inbox.put(Overflow())
        return True


class Watcher:
    """Starts, supervises and stops the observer thread for incoming/."""

    def __init__(self, root: str, inbox: queue.SimpleQueue[Any], *, polling: bool) -> None:
        self.root = root
        self.inbox = inbox
        self.polling = polling
        self.observer: BaseObserver | None = None
        self._filter = _OverflowFilter(inbox)
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

    def _start_observer(self) -> BaseObserver:
        if not self.polling:
            observer = _inotify_observer()
            try:
                return self._schedule(observer)
            except OSError as e:
                _stop_quietly(observer)
                if e.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                self._explain_limit(e)
                self.polling = True
        return self._schedule(PollingObserver(timeout=1.0))

    def _schedule(self, observer: BaseObserver) -> BaseObserver:
        observer.name = "observer"
        observer.schedule(
            Handler(self.root, self.inbox), self.root, recursive=True, event_filter=EVENTS
        )
        observer.start()
        return observer

    def _explain_limit(self, e: OSError) -> None:
        folders = sum(1 for _ in os.walk(self.root))
        if e.errno == errno.ENOSPC:
            log.error(
                "inotify watch limit reached: %s has %d folders but fs.inotify.max_user_watches "
                "is %s; raise it (sysctl fs.inotify.max_user_watches=%d). Falling back to "
                "polling, which is slower and has no close events.",
                self.root,
                folders,
                _read_sysctl("max_user_watches"),
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


def _read_sysctl(name: str) -> str:
    try:
        with open(f"/proc/sys/fs/inotify/{name}") as f:
            return f.read().strip()
    except OSError:
        return "unknown"
