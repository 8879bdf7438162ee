"""The daemon's inbox: one union of every message a thread may post to the main loop.

The observer thread posts filesystem events (intake/watcher.py), the scanner what it found, the
downloader its outcomes, a pool's futures their results, the signal handlers the signal. The
main loop takes them one at a time and dispatches with `match` (service/daemon.py).
"""

from __future__ import annotations

import queue
from concurrent.futures import Future
from dataclasses import dataclass

from thumbd.downloads.stage import Fetched
from thumbd.intake.watcher import (
    DirArrived,
    DirChanged,
    DirGone,
    FsEvent,
    Moved,
    Overflow,
    Unlisted,
)
from thumbd.render.spec import RenderResult, Signature


@dataclass(frozen=True, slots=True)
class Job:
    """One source to render: the path and the signature it settled at."""

    rel: str
    path: str
    signature: Signature
    seen: float  # monotonic time it was taken, for the latency in the log line
    attempt: int = 1
    new: bool = False  # arrived while thumbd runs (an event): ahead of the backlog
    sent: float = 0.0  # monotonic time it was handed to the pool: `seen` to this is waiting
    settings: str = ""  # the fingerprint of the settings it was handed over with


@dataclass(frozen=True, slots=True)
class Completed:
    """A pool's future for `job` has ended (posted from the pool's thread)."""

    job: Job
    future: Future[RenderResult]


@dataclass(frozen=True, slots=True)
class ScanBatch:
    """Paths a scan found that need a look; `final` on the scan's last batch."""

    rels: list[str]
    final: bool


@dataclass(frozen=True, slots=True)
class Gone:
    """Recorded sources a complete scan did not find: deleted while nobody was looking."""

    rels: list[str]


@dataclass(frozen=True, slots=True)
class Ignored:
    """Files a scan passed over for their type, counted by extension."""

    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class Signalled:
    signum: int


Message = (
    FsEvent
    | Moved
    | DirArrived
    | DirGone
    | DirChanged
    | Unlisted
    | Overflow
    | ScanBatch
    | Gone
    | Ignored
    | Completed
    | Fetched
    | Signalled
)
Inbox = queue.SimpleQueue[Message]
