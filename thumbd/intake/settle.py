"""Intake: which paths are work, and when a file is complete enough to take.

An inotify close_write does not prove a file is complete (a killed wget leaves a short file under
its final name), and a file moved in from outside the tree, or written into a folder created a
moment ago, may arrive with no close event at all. So a path is taken only once its size, mtime
and inode have stayed the same for `settle_seconds`, and, when no close or rename was seen, once
nothing about it has changed for `quiet_seconds` either. The job re-checks the signature when it
runs, and the daemon once more before it records the result.

A file still open for writing is not taken at all: inotify reports opens and both kinds of close
(after writing, after reading only), and the settler counts, per path, the opens it saw less the
closes. A path written since its last close-after-write while that count is above zero is held
until the close, up to `HOLD_OPEN` after its last event (a writer that never closes; then the
quiet rule decides). A reader's open and close (a worker decoding it, a viewer) leave the count
where it was. The counts only ever hold a file back, so they are dropped whenever they may be
wrong: for a path deleted or renamed away, under a folder moved away, after lost events (an
overflow), for a new incoming/. Polling sees no opens or closes: the quiet rule alone.
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import heapq
import math
import os
import re
import stat
import time
from dataclasses import dataclass, field

from thumbd.render.formats import SOURCE_EXTENSIONS
from thumbd.render.spec import Signature

IMAGE_EXTENSIONS = SOURCE_EXTENSIONS  # stills, videos, camera RAW (render/formats.py)

# Names writers use while a file is incomplete (rsync, Syncthing, Nextcloud, browsers, rclone,
# OneDrive, editors). Dotfiles cover rsync's `.name.XXXXXX`, Syncthing's `.syncthing.*.tmp` and
# Nextcloud's `.name.~XXXXXXXX`; every path component is checked, so `.~tmp~/` folders are too.
TEMP_PATTERNS = ("*.part", "*.partial", "*.crdownload", "*.tmp", "*~")

# How long after its last event a file its writer holds open waits for the close.
HOLD_OPEN = 600.0


# Folders NAS systems, sync clients and operating systems keep inside a share: their contents
# are the system's own (thumbnails, recycle bins, snapshots, old versions), never new photos.
# Dot-folders (.stversions, .Trash-1000, .thumbnails, .@__thumb) are skipped as all dotfiles.
CLUTTER_FOLDERS = frozenset(
    {
        "@eaDir",  # Synology's thumbnails and metadata
        "#recycle",  # Synology's and others' recycle bin
        "@Recycle",  # QNAP
        "#snapshot",  # Synology snapshots
        "@Recently-Snapshot",  # QNAP
        "$RECYCLE.BIN",  # Windows
        "System Volume Information",
        "lost+found",
    }
)
# A folder holding one of these files is left out with everything below it (Android's
# `.nomedia`, which Nextcloud also honours, or thumbd's own).
OPT_OUT_FILES = (".nomedia", ".thumbdignore")


class Kind(enum.Enum):
    IMAGE = "image"
    MANIFEST = "manifest"  # a `.urls` file: its URLs are downloaded (thumbd.download)


def classify(rel: str, ignore: tuple[str, ...] = ()) -> Kind | None:
    """What kind of work `rel` (relative to incoming/) is, or None to ignore it. A path that is
    not valid UTF-8 is ignored too: it cannot be recorded (see `storable`)."""
    suffix = _screened_suffix(rel, ignore)
    if suffix in IMAGE_EXTENSIONS:
        return Kind.IMAGE
    if suffix == ".urls":
        return Kind.MANIFEST
    return None


def ignored_extension(rel: str, ignore: tuple[str, ...] = ()) -> str | None:
    """The extension (".pdf", or "" for none) of a file thumbd passes over for its type alone:
    what `thumbd status` counts as ignored. None for work, and for names thumbd leaves out on
    purpose (temp names, dotfiles, `[watch] ignore`)."""
    suffix = _screened_suffix(rel, ignore)
    if suffix is None or suffix in IMAGE_EXTENSIONS or suffix == ".urls":
        return None
    return suffix


def _screened_suffix(rel: str, ignore: tuple[str, ...]) -> str | None:
    """The lower-case extension of a name that may be work, or None for one that never is."""
    if not storable(rel):
        return None
    # Plain string work and one precompiled pattern per list: a scan calls this once per file
    # (pathlib and one fnmatch per pattern made it most of a start-up scan's time).
    parts = [part for part in rel.split("/") if part not in ("", ".")]
    if not parts or any(part.startswith(".") or part in CLUTTER_FOLDERS for part in parts):
        return None
    name = parts[-1]
    if _globs(TEMP_PATTERNS).match(name):
        return None
    if ignore:
        pattern = _globs(ignore)
        if pattern.match(name) or pattern.match(rel):
            return None
    return _suffix(name).lower()


def storable(rel: str) -> bool:
    """Whether `rel` is valid UTF-8: what the state (SQLite text), the index JSON and the logs
    can hold. Linux allows any bytes in a name (Latin-1 names from an old archive or share);
    Python gives the invalid ones as lone surrogates, which none of those can encode."""
    if rel.isascii():
        return True
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(path: str) -> str:
    """`path` for a log line or a message: its invalid bytes as `\\xff` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@functools.lru_cache(maxsize=16)
def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regular expression matching what any of the fnmatch `patterns` matches."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns))


def _suffix(name: str) -> str:
    """PurePosixPath(name).suffix: the last dot's part, not a leading or a trailing dot."""
    i = name.rfind(".")
    return name[i:] if 0 < i < len(name) - 1 else ""


def signature(path: str) -> Signature | None:
    """(size, mtime_ns, inode) of a regular file, not following symlinks; None otherwise."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(slots=True)
class _Pending:
    closed: bool  # a close_write or a rename was seen since the last write
    wrote: bool  # a write was seen (inotify) and no close_write since
    last_event: float
    sig: Signature | None
    stable_since: float
    due: float
    quiet: float = 0.0  # more quiet than quiet_seconds this one needs (see Settler.touch)


@dataclass(order=True, slots=True)
class _Due:
    at: float
    rel: str = field(compare=False)


class Settler:
    """Tracks paths until they are complete. Owned by the daemon's main thread."""

    def __init__(self, root: str, settle: float, quiet: float, hold: float = HOLD_OPEN) -> None:
        self.root = root
        self.settle = settle
        self.quiet = quiet
        self.hold = hold
        self._pending: dict[str, _Pending] = {}
        self._heap: list[_Due] = []
        self._opens: dict[str, int] = {}  # opens seen less closes seen, where above zero

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, rel: str) -> bool:
        return rel in self._pending

    def touch(self, rel: str, now: float, *, closed: bool | None, quiet: float = 0.0) -> None:
        """An event was seen on `rel`: a close or rename (closed=True), a write (False), or a
        change of attributes (None: what was known about closing stays). `quiet`: no event,
        but a decode failed moments after a write: it must be quiet that long (at least
        quiet_seconds) before it is tried again; the next event ends that."""
        p = self._track(rel, now)
        p.last_event = now
        p.quiet = quiet
        if closed is not None:
            p.closed = closed
            p.wrote = not closed and not quiet
        self._schedule(rel, p, now + self.settle)

    def count_open(self, rel: str, change: int, now: float) -> None:
        """An open (+1) or a close (-1, after writing or not) of `rel` was seen."""
        n = self._opens.get(rel, 0) + change
        if n > 0:
            self._opens[rel] = n
            return
        self._opens.pop(rel, None)
        p = self._pending.get(rel)
        if p is not None and p.wrote:  # held until now: the quiet rule decides from here
            self._schedule(rel, p, now)

    def is_held(self, rel: str) -> bool:
        """Whether `rel` is written and, as far as the events tell, still open."""
        p = self._pending.get(rel)
        return p is not None and p.wrote and self._opens.get(rel, 0) > 0

    def forget_opens(self, now: float, under: str | None = None) -> None:
        """Drop the open counts of every path (events were lost), or of those below the
        folder `under` (moved away: its files' later events do not tell of incoming/)."""
        if under is None:
            dropped = list(self._opens)
            self._opens.clear()
        else:
            prefix = under + "/"
            dropped = [rel for rel in self._opens if rel.startswith(prefix)]
            for rel in dropped:
                del self._opens[rel]
        for rel in dropped:
            if (p := self._pending.get(rel)) is not None:
                self._schedule(rel, p, now)

    def found(self, rel: str, now: float) -> None:
        """A scan found `rel` with no event: its mtime alone tells how long it has been quiet."""
        if rel not in self._pending:
            self._schedule(rel, self._track(rel, now), now + self.settle)

    def _track(self, rel: str, now: float) -> _Pending:
        p = self._pending.get(rel)
        if p is None:
            sig = signature(os.path.join(self.root, rel))
            p = _Pending(False, False, -math.inf, sig, now, now + self.settle)
            self._pending[rel] = p
        return p

    def discard(self, rel: str) -> None:
        """`rel` is gone (deleted, renamed away): no longer tracked, nor its opens."""
        self._pending.pop(rel, None)
        self._opens.pop(rel, None)

    def identities(self) -> dict[Signature, str]:
        """signature -> path of what is tracked (as first seen): a recorded source gone from
        its path that is here under another one has moved."""
        return {p.sig: rel for rel, p in self._pending.items() if p.sig is not None}

    def move(self, src: str, dest: str, now: float) -> list[str]:
        """`src` (a file, or a folder with everything below it) was renamed to `dest`: what is
        tracked there is tracked under the new name, a write still going on included (it goes
        on waiting for its close or quiet time, its opens counted under the new name). Returns
        the new paths of what was tracked."""
        prefix = f"{src}/"
        olds = [r for r in self._pending if r == src or r.startswith(prefix)]
        moved = []
        for old in olds:
            new = dest + old[len(src) :]
            p = self._pending.pop(old)
            p.sig = signature(os.path.join(self.root, new))
            p.stable_since = now
            self._pending[new] = p
            self._schedule(new, p, now + self.settle)
            moved.append(new)
        for old in [r for r in self._opens if r == src or r.startswith(prefix)]:
            new = dest + old[len(src) :]  # its writer's close comes under the new name
            self._opens[new] = self._opens.get(new, 0) + self._opens.pop(old)
        return moved

    def next_due(self) -> float | None:
        while self._heap and self._heap[0].rel not in self._pending:
            heapq.heappop(self._heap)
        return self._heap[0].at if self._heap else None

    def pop_ready(self, now: float) -> list[tuple[str, Signature]]:
        """Paths that are complete now, with the signature they settled at."""
        ready: list[tuple[str, Signature]] = []
        offset = time.time() - time.monotonic()  # to compare mtimes with monotonic times
        while self._heap and self._heap[0].at <= now:
            rel = heapq.heappop(self._heap).rel
            p = self._pending.get(rel)
            if p is None or p.due > now:
                continue  # dropped, or a later check is scheduled
            sig = self._check(rel, p, now, offset)
            if sig is not None:
                del self._pending[rel]
                ready.append((rel, sig))
        return ready

    def _check(self, rel: str, p: _Pending, now: float, offset: float) -> Signature | None:
        sig = signature(os.path.join(self.root, rel))
        if sig is None:
            del self._pending[rel]  # deleted, or not a regular file: nothing to do
            self._opens.pop(rel, None)
            return None
        if sig != p.sig:
            p.sig, p.stable_since = sig, now
            self._schedule(rel, p, now + self.settle)
            return None
        wait = p.stable_since + self.settle - now
        if p.wrote and self._opens.get(rel, 0) > 0:
            # Its writer holds it open: the close will touch it again. Not for ever, though.
            wait = max(wait, p.last_event + self.hold - now)
        if not p.closed:
            # No close seen: the writer may still hold it open. Count quiet time from the last
            # event or the file's own mtime, whichever is later.
            last = max(p.last_event, sig[1] / 1e9 - offset)
            wait = max(wait, last + max(self.quiet, p.quiet) - now)
        if wait > 0:
            self._schedule(rel, p, now + wait)
            return None
        return sig

    def _schedule(self, rel: str, p: _Pending, at: float) -> None:
        p.due = at
        heapq.heappush(self._heap, _Due(at, rel))
