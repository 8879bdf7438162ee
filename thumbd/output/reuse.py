"""Sources that need no render: thumbnails another record already has.

Asked for each new source (no row of its own) before it goes to a worker, in this order:

1. **Moved while nobody looked** (thumbd stopped, events lost): a row of another path with the
   same identity (size, mtime_ns, inode) whose path no longer holds that file. Its outputs are
   renamed to the new path's names and its row moves (output/moves.Mover).
2. **Deleted a moment ago** (the window): a done source forgotten in the last WINDOW seconds
   keeps its thumbnails in `outgoing/.thumbd-tmp/held/` (hard links under on_delete = "keep",
   the files themselves under "remove"). A new file with its identity, or of its size with
   its digest and render settings, takes them back: a move across filesystems, a sync
   client's delete + create, a folder moved out and back in. Nothing stays under the old names.
3. **A copy**: a done row of the same size with the same digest (render/digest) and the same
   settings fingerprint. Its thumbnails are hard-linked (copied where links fail) into place,
   atomically like any thumbnail. The new file is hashed only when such a row, a held source
   or a source being rendered has its size.
4. **A copy of one still rendering** waits for that twin's result, then takes its thumbnails;
   if the twin fails, changes or goes, it is rendered after all. Nothing waits for ever.

Runs on the main loop only.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from thumbd import testhooks
from thumbd.output import names
from thumbd.output.moves import Mover
from thumbd.output.writer import TMP_DIR, plain_key
from thumbd.render import digest
from thumbd.render.spec import Signature
from thumbd.service import metrics
from thumbd.service.messages import Job
from thumbd.service.shared import Shared
from thumbd.store.places import Candidate
from thumbd.text import plural

log = logging.getLogger("thumbd")

WINDOW = 600.0  # seconds a deleted source's thumbnails stay candidates
HELD = f"{TMP_DIR}/held"
RELEASE_EVERY = 0.25  # seconds between looks at the twins copies wait for
DIGESTS_KEPT = 4096  # recent digests the main loop took, by path and identity
PRUNE_EVERY = 5.0  # seconds between clean-ups of the sizes of sources being rendered


@dataclass(frozen=True, slots=True)
class Held:
    """A deleted done source whose thumbnails are kept for the window."""

    path: str
    signature: Signature
    digest: str | None
    settings: str | None
    outputs: tuple[str, ...]  # its names, as its row listed them
    files: tuple[str, ...]  # where they are kept now, below outgoing/
    until: float  # monotonic


class Reuse:
    def __init__(
        self,
        shared: Shared,
        mover: Mover,
        holds: Callable[[str], bool],
        enqueue: Callable[[Job], None],
    ) -> None:
        self.shared = shared
        self.mover = mover
        self.holds = holds  # the dispatcher's: a job for this path is queued or in flight
        self.enqueue = enqueue  # the dispatcher's
        self.window = testhooks.reuse_window(WINDOW)
        self.held: dict[int, Held] = {}  # in the order they were held: the oldest first
        self.held_by_identity: dict[Signature, int] = {}
        self.held_by_digest: dict[tuple[int, str], int] = {}  # (size, digest)
        self.held_sizes: Counter[int] = Counter()
        self._ids = itertools.count()
        self.rendering: dict[int, set[str]] = {}  # size -> new sources sent to render
        self.waiting: dict[str, Job] = {}  # a copy -> its job, until its twin is through
        self.twin_of: dict[str, str] = {}
        self.due: float | None = None
        self.hashed = 0  # digests the main loop took (status, bench)
        # path -> (identity, digest): a copy waiting for its twin is asked again when the twin
        # is through, and copies of one twin all compare with it; each file is read once.
        self.digests: dict[str, tuple[Signature, str | None]] = {}
        self.found = [0, 0]  # moves found by identity since the last line: moved, rendered
        self.said = 0.0
        self.pruned = 0.0

    def __len__(self) -> int:
        return len(self.waiting)

    def next_due(self) -> float | None:
        dues = [
            self.said + 1.0 if self.found[0] else None,
            self.due if self.waiting else None,
            next((h.until for h in self.held.values()), None),
        ]
        return min((d for d in dues if d is not None), default=None)

    def busy(self) -> bool:
        return bool(self.waiting)

    def clear(self) -> None:
        """incoming/ is another folder: the copies waiting are dropped (they stay on disk)."""
        self.waiting.clear()
        self.twin_of.clear()
        self.rendering.clear()
        self.digests.clear()

    # -- a new source ----------------------------------------------------------------------

    def moved(self, job: Job) -> bool:
        """True when `job` is a recorded or held source that moved here (asked first)."""
        self._drop_waiting(job.rel)
        return self._moved(job) or self._taken_back(job, by_identity=True)

    def take(self, job: Job) -> bool:
        """True when `job` needs no render: a copy, or waiting for its twin (asked after
        moved() and after the thumbnails already there); False: render it."""
        size = job.signature[0]
        twins = [r for r in self.rendering.get(size, ()) if r != job.rel and self.holds(r)]
        self.rendering[size] = set(twins)
        candidates = self.shared.state.places.same_size(size, job.rel)
        if not (candidates or self.held_sizes[size] or twins):
            self.rendering[size].add(job.rel)
            return False
        mine = self._digest(job.path, job.signature)
        if mine is not None:
            settings = self.shared.settings
            for c in candidates:
                same = c.digest == mine and c.settings == settings and c.content_id is None
                if same and self._copied(job, c, mine):
                    return True
            if self._taken_back(job, by_identity=False, digest_=mine):
                return True
            for twin in twins:
                path = os.path.join(str(self.shared.config.paths.incoming), twin)
                if self._digest(path, _identity(path)) == mine:
                    self.waiting[job.rel] = job
                    self.twin_of[job.rel] = twin
                    self.due = self.due or time.monotonic() + RELEASE_EVERY
                    return True
        self.rendering[size].add(job.rel)
        return False

    def _digest(self, path: str, identity: Signature | None) -> str | None:
        """The digest of the file at `path`, whose identity is `identity` (taken again only
        when that changed); None when it cannot be read."""
        if identity is None:
            return None  # gone
        known = self.digests.get(path)
        if known is not None and known[0] == identity:
            return known[1]
        self.hashed += 1
        found = digest.of_path(path)
        self.digests.pop(path, None)  # the newest last: the oldest go first
        self.digests[path] = (identity, found)
        if len(self.digests) > DIGESTS_KEPT:
            del self.digests[next(iter(self.digests))]
        return found

    def _moved(self, job: Job) -> bool:
        """A recorded source whose path no longer holds its file, with this file's identity."""
        state = self.shared.state
        incoming = str(self.shared.config.paths.incoming)
        for c in state.places.same_identity(job.signature, job.rel):
            old = os.path.join(incoming, c.path)
            if os.path.lexists(old) and _identity(old) == c.signature:
                continue  # a hard link: the same file at two paths (a copy, below)
            renamed = self.mover.move_file(c.path, job.rel, replace=lambda rel: None)
            rendered = renamed is None or not renamed.complete
            if rendered:  # some of its thumbnails were missing
                self.shared.state.places.invalidate(job.rel)
                self.enqueue(job)
            log.debug("moved %s -> %s (found by a scan)", c.path, job.rel)
            self.found[0] += 1
            self.found[1] += rendered
            self.shared.stats.moved += 1
            metrics.source_moved()
            return True
        return False

    def _say_found(self, now: float) -> None:
        """One line a second at most for the moves found by identity (a tree renamed while
        thumbd was stopped is thousands of them)."""
        moved, rendered = self.found
        if moved and now >= self.said + 1.0:
            self.said, self.found = now, [0, 0]
            log.info(
                "found %s moved while thumbd was not looking: thumbnails moved along, %d rendered",
                plural(moved, "source"),
                rendered,
            )

    def _copied(self, job: Job, c: Candidate, mine: str) -> bool:
        incoming = str(self.shared.config.paths.incoming)
        if _identity(os.path.join(incoming, c.path)) != c.signature:
            return False  # changed since its digest was taken
        renamed = self.mover.place(c.path, c.outputs, c.outputs, job.rel, link=True)
        if not renamed.complete:
            for name in renamed.outputs:
                if name not in c.outputs:
                    self.mover.writer().remove(name)
            return False
        self._record(job, renamed.outputs, mine, c.settings, moved=False)
        log.info(
            "reused %s: the same content as %s, its thumbnails linked",
            job.rel,
            c.path,
            extra={"source": job.rel},
        )
        return True

    def _record(
        self, job: Job, outputs: list[str], mine: str | None, settings: str | None, *, moved: bool
    ) -> None:
        size = job.signature[0]
        self.shared.state.record_done(
            job.rel, job.signature, outputs, size, 0, settings, digest=mine
        )
        stats = self.shared.stats  # done: its record counts it (store/runs.py)
        if moved:
            stats.moved += 1
            metrics.source_moved()
        else:
            stats.reused += 1
            metrics.source_reused()
        self.mover.changed(job.rel)

    # -- the window ------------------------------------------------------------------------

    def hold(self, rel: str, remove: bool) -> bool:
        """`rel` is being forgotten: keep its thumbnails for the window (moved into the held
        folder when they are to go, else hard-linked there). True when they were moved."""
        state = self.shared.state
        c = state.places.candidate(rel)
        if c is None or not c.outputs or self.window <= 0:
            return False
        near = state.outputs_near(plain_key(rel))
        near.pop(rel, None)
        if len(names.unowned(c.outputs, near)) < len(c.outputs):
            return False  # shared with a sibling's row (a state from before names.py)
        writer = self.mover.writer()
        files: list[str] = []
        n = next(self._ids)
        for i, name in enumerate(c.outputs):
            kept = f"{HELD}/{n}.{i}"
            try:
                ok = writer.rename(name, kept, prune=True) if remove else writer.link(name, kept)
            except OSError:
                ok = False
            if not ok:
                for f in files:
                    writer.remove(f)
                return False
            files.append(kept)
        until = time.monotonic() + self.window
        h = Held(rel, c.signature, c.digest, c.settings, c.outputs, tuple(files), until)
        self.held[n] = h
        self.held_by_identity[h.signature] = n
        if h.digest is not None:
            self.held_by_digest[(h.signature[0], h.digest)] = n
            self.held_sizes[h.signature[0]] += 1
        return remove

    def _taken_back(self, job: Job, *, by_identity: bool, digest_: str | None = None) -> bool:
        """A held source with this file's identity, or its size, digest and settings."""
        if by_identity:
            n = self.held_by_identity.get(job.signature)
        else:
            n = self.held_by_digest.get((job.signature[0], digest_ or ""))
        h = self.held.get(n) if n is not None else None
        if n is None or h is None or (not by_identity and h.settings != self.shared.settings):
            return False
        self._unhold(n)
        renamed = self.mover.place(h.path, h.outputs, h.files, job.rel)
        if not renamed.complete:
            self._discard(h)
            return False
        self._record(job, renamed.outputs, h.digest, h.settings, moved=True)
        self._drop_kept(h)
        log.info(
            "moved %s -> %s (deleted and made again): 1 source, 0 rendered",
            h.path,
            job.rel,
            extra={"source": job.rel},
        )
        return True

    def _unhold(self, n: int) -> Held:
        h = self.held.pop(n)
        if self.held_by_identity.get(h.signature) == n:
            del self.held_by_identity[h.signature]
        if h.digest is not None:
            if self.held_by_digest.get((h.signature[0], h.digest)) == n:
                del self.held_by_digest[(h.signature[0], h.digest)]
            self.held_sizes[h.signature[0]] -= 1
        return h

    def _drop_kept(self, h: Held) -> None:
        """A move is not a deletion: the thumbnails kept under the old names go too, unless
        another row lists them now."""
        writer = self.mover.writer()
        for name in names.unowned(h.outputs, self.shared.state.outputs_near(plain_key(h.path))):
            writer.remove(name, prune=True)

    def _discard(self, h: Held) -> None:
        writer = self.mover.writer()
        for f in h.files:
            writer.remove(f)

    # -- the clock -------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self._say_found(now)
        expired = list(itertools.takewhile(lambda n: self.held[n].until <= now, self.held))
        for n in expired:
            self._discard(self._unhold(n))
        if expired:
            log.info(
                "the reuse window closed for %s: their thumbnails are no longer kept",
                plural(len(expired), "deleted source"),
            )
        if now >= self.pruned + PRUNE_EVERY:  # new sources no longer rendering
            self.pruned = now
            kept = {
                size: {r for r in rels if self.holds(r)} for size, rels in self.rendering.items()
            }
            self.rendering = {size: rels for size, rels in kept.items() if rels}
        if not self.waiting or (self.due is not None and now < self.due):
            return
        self.due = now + RELEASE_EVERY
        state = self.shared.state
        for rel, job in list(self.waiting.items()):
            twin = self.twin_of[rel]
            if self.holds(twin):  # queued or rendering: its worker ends it either way
                continue
            self._drop_waiting(rel)
            if _identity(job.path) != job.signature:
                continue  # moved, changed or gone meanwhile: its own events take it from here
            record = state.get(twin)
            done = record is not None and record.status == "done"
            if not (done and (self.moved(job) or self.take(job))):
                self.enqueue(job)  # the twin failed, changed or went: rendered after all
        if not self.waiting:
            self.due = None

    def _drop_waiting(self, rel: str) -> None:
        self.waiting.pop(rel, None)
        self.twin_of.pop(rel, None)


def _identity(path: str) -> Signature | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)
