"""The per-source tracker: from a path that needs a look to a job ready to render.

Filesystem events, scans and `thumbd retry` hand paths in; the settler holds each until it is
complete (intake/settle.py); then the tracker decides what it is: unchanged since its record
(nothing to do), a manifest (its URLs go to the downloads stage), a source not worth a worker
(too large, reached through a symlinked folder), one whose thumbnails are already there (adopted
without rendering), or a job for the dispatcher. It also forgets sources deleted while nobody
was looking (a folder moved out; what a scan no longer finds goes through intake/unseen.py,
which also tells a move thumbd did not see). Runs on the main loop only.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from thumbd.downloads.stage import Downloads
from thumbd.intake import scanner
from thumbd.intake.settle import (
    Kind,
    Settler,
    classify,
    ignored_extension,
    shown,
    signature,
    storable,
)
from thumbd.intake.unseen import Unseen
from thumbd.intake.watcher import FsEvent, Moved
from thumbd.output import names
from thumbd.output.moves import Mover
from thumbd.output.publish import thumbnails_fate
from thumbd.output.reuse import Reuse
from thumbd.output.writer import plain_key
from thumbd.render import formats
from thumbd.render.spec import FailKind, Failure
from thumbd.service import metrics
from thumbd.service.messages import Job
from thumbd.service.shared import Shared
from thumbd.store import recovery
from thumbd.text import plural

if TYPE_CHECKING:
    from thumbd.output.publish import Publisher
    from thumbd.service.dispatch import Dispatcher

log = logging.getLogger("thumbd")


class Tracker:
    """Every source between "needs a look" and "handed to the pool"."""

    def __init__(
        self, shared: Shared, downloads: Downloads, dispatcher: Dispatcher, publisher: Publisher
    ) -> None:
        self.shared = shared
        self.downloads = downloads
        self.dispatcher = dispatcher
        self.publisher = publisher
        watch = shared.config.watch
        self.root = str(shared.config.paths.incoming)
        self.real_root = os.path.realpath(self.root)
        self.settler = Settler(self.root, watch.settle_seconds, watch.quiet_seconds)
        self.real_dirs: dict[str, str] = {}
        self.opted_out: dict[str, bool] = {}  # folder -> holds .nomedia or .thumbdignore
        self.unlisted: set[str] = set()  # folders that could not be listed (nor watched)
        self.siblings = recovery.Siblings()  # same-stem files per folder, for adoption
        self.arrivals = 0  # paths scans, downloads and retries handed in: `once`'s total
        self.ignored_said: set[str] = set()  # extensions passed over and logged this run
        self.fresh: set[str] = set()  # sources an event brought: they go ahead of the backlog
        self.observer = 0  # the running observer's number: only its opens are counted
        self.mover = Mover(shared, lambda: publisher.writer)
        self.mover.changed = lambda rel: publisher.changed(rel)
        self.reuse = Reuse(shared, self.mover, dispatcher.holds, dispatcher.enqueue)
        self.unseen = Unseen(
            shared, self.mover, dispatcher.holds, lambda rel: publisher.forget(rel, log_each=False)
        )
        publisher.hold = self.reuse.hold

    def __len__(self) -> int:
        return len(self.settler) + len(self.reuse)  # and copies waiting for their twins

    def next_due(self) -> float | None:
        dues = [d for d in (self.settler.next_due(), self.reuse.next_due()) if d is not None]
        return min(dues, default=None)

    def busy(self) -> bool:
        return bool(self.settler) or self.reuse.busy()

    def settings_changed(self) -> None:
        watch = self.shared.config.watch
        self.settler.settle = watch.settle_seconds
        self.settler.quiet = watch.quiet_seconds

    def observing(self, observer: int) -> None:
        """A new observer runs: what the last one saw open may close unseen."""
        if observer != self.observer:
            self.observer = observer
            self.settler.forget_opens(time.monotonic())

    def reroot(self) -> None:
        """incoming/ is another folder now: what was tracked under the old one stays there."""
        self.root = str(self.shared.config.paths.incoming)
        self.real_root = os.path.realpath(self.root)
        self.settler = Settler(self.root, self.settler.settle, self.settler.quiet)
        self.reuse.clear()
        self.unseen.clear()
        self.dispatcher.drop_ready()

    # -- paths in --------------------------------------------------------------------------

    def on_event(self, e: FsEvent | Moved) -> None:
        if e.root and e.root != self.real_root:
            return  # queued by the watcher of an earlier incoming/ (a reload moved it)
        if isinstance(e, Moved):
            self.on_moved(e)
            return
        if e.opens and e.observer == self.observer and self._is_work(e.rel):
            self.settler.count_open(e.rel, e.opens, time.monotonic())
        if e.opens and e.closed is None:
            return  # an open, or a reader's close: nothing changed
        if not storable(e.rel):  # never recorded: nothing to take or forget
            if e.closed and self._is_work(shown(e.rel)):
                self.unnamed(e.rel)
            return
        if e.closed and not e.deleted and not self._is_work(e.rel):
            ext = ignored_extension(e.rel, self.shared.config.watch.ignore)
            if ext is not None:
                self.passed_over({ext: 1})
            return
        if e.deleted:
            if os.path.lexists(os.path.join(self.root, e.rel)):
                # There again (replaced at once: its own events follow), or not ours: the watch
                # of a folder moved out of incoming/ still reports its files under their old
                # names (watchdog keeps it), and a new folder may have that name now.
                return
            self.settler.discard(e.rel)
            self.fresh.discard(e.rel)
            if not self.dispatcher.running(e.rel):  # else its result finds it gone
                self.publisher.forget(e.rel)
            return
        if self._is_work(e.rel) and not scanner.opted_out(self.root, e.rel, self.opted_out):
            self.settler.touch(e.rel, time.monotonic(), closed=e.closed)
            self.fresh.add(e.rel)

    def on_moved(self, m: Moved) -> None:
        """A file or folder renamed within incoming/: its thumbnails and rows follow it (no
        render), unless one of the names is not work (then it is a deletion, or an arrival)."""
        src_work = self._movable(m.src, m.folder)
        dest_work = self._movable(m.dest, m.folder)
        if not (src_work and dest_work):
            if m.folder:
                if src_work:
                    self.gone_dir(m.src)
                if storable(m.dest):
                    self.on_dir(m.dest)
            else:
                if src_work:
                    self.on_event(FsEvent(m.src, None, deleted=True))
                self.on_event(FsEvent(m.dest, True))
            return
        now = time.monotonic()
        tracked = set(self.settler.move(m.src, m.dest, now))
        for rel in tracked:
            self.fresh.add(rel)
        if m.folder:
            self._moved_folder(m.src, m.dest, tracked, now)
            return
        renamed = self.mover.move_file(m.src, m.dest, replace=self._replaced)
        if renamed is not None and not renamed.complete:
            self.shared.state.places.invalidate(m.dest)  # some were missing: rendered again
        if m.dest not in tracked:
            self.settler.touch(m.dest, now, closed=True)  # unchanged since its row: nothing
            self.fresh.add(m.dest)
        if renamed is not None:
            self.shared.stats.moved += 1
            metrics.source_moved()
            rendered = 0 if renamed.complete else 1
            log.info("moved %s -> %s: 1 source, %d rendered", m.src, m.dest, rendered)

    def _moved_folder(self, src: str, dest: str, tracked: set[str], now: float) -> None:
        moved = self.mover.move_folder(src, dest)
        state = self.shared.state
        rendered = 0
        for sub, _ in scanner.walk(os.path.join(self.root, dest), self.shared.config.watch.ignore):
            rel = f"{dest}/{sub}"
            if rel in tracked:
                continue  # being written still, or settling: it goes on as it was
            record = state.get(rel)
            if record is not None and record.signature == signature(os.path.join(self.root, rel)):
                continue
            rendered += record is None or record.status != "manifest"
            self.settler.touch(rel, now, closed=True)
            self.fresh.add(rel)
        self.shared.stats.moved += len(moved)
        metrics.source_moved(len(moved))
        log.info(
            "moved %s -> %s: %s, %d rendered", src, dest, plural(len(moved), "source"), rendered
        )

    def _movable(self, rel: str, folder: bool) -> bool:
        """Whether a move's end is a path thumbd takes images at (a folder: one it takes the
        images in). A manifest is not moved: it is deleted and read anew."""
        probe = f"{rel}/x.jpg" if folder else rel
        ignore = self.shared.config.watch.ignore
        if not storable(rel) or classify(probe, ignore) is not Kind.IMAGE:
            return False
        return not scanner.opted_out(self.root, probe, self.opted_out)

    def _replaced(self, rel: str) -> None:
        self.settler.discard(rel)
        self.publisher.forget(rel, log_each=False, replaced=True)
        log.info("%s was replaced by a move: its thumbnails go", rel, extra={"source": rel})

    def on_dir(self, rel: str) -> None:
        """A folder moved in from outside: its files are complete as they are."""
        if not storable(rel):
            self.unnamed(rel)
            return
        now = time.monotonic()

        def unlisted(sub: str) -> None:
            self.unlisted.add(f"{rel}/{sub}" if sub else rel)

        if scanner.opted_out(self.root, f"{rel}/x", self.opted_out):
            return
        folder = os.path.join(self.root, rel)
        for sub, _ in scanner.walk(folder, self.shared.config.watch.ignore, unlisted):
            self.settler.touch(f"{rel}/{sub}", now, closed=True)
            self.fresh.add(f"{rel}/{sub}")

    def found(self, rels: list[str]) -> None:
        """Paths a scan or `thumbd retry` says need a look (unless already on their way)."""
        now = time.monotonic()
        for rel in rels:
            if not self.dispatcher.holds(rel):
                self.settler.found(rel, now)
        self.arrivals += len(rels)

    def arrived(self, rel: str) -> None:
        """A complete file written by thumbd itself (a download)."""
        self.settler.touch(rel, time.monotonic(), closed=True)
        self.fresh.add(rel)
        self.arrivals += 1

    def resettle(self, rel: str, *, quiet: float = 0.0) -> None:
        """It changed while it rendered or waited: settle it again. With `quiet`: it failed to
        decode moments after it was written: it must stay unchanged that long first."""
        if quiet:
            self.settler.touch(rel, time.monotonic(), closed=False, quiet=quiet)
        else:
            self.settler.touch(rel, time.monotonic(), closed=None)

    def passed_over(self, counts: dict[str, int]) -> None:
        """Files of a type thumbd does not take: said once per extension per run, so that a
        folder of them is not ignored in silence (`thumbd status` counts them)."""
        for ext in sorted(counts.keys() - self.ignored_said):
            self.ignored_said.add(ext)
            what = f"{ext} files" if ext else "files without an extension"
            log.info(
                "ignoring %s (%d so far): thumbd makes no thumbnails of them; "
                "thumbd status counts what it ignores",
                what,
                counts[ext],
            )

    def unnamed(self, rel: str) -> None:
        log.warning(
            "skipping %s: its name is not valid UTF-8; rename it (convmv) to have it thumbnailed",
            shown(os.path.join(self.root, rel)),
        )

    def _is_work(self, rel: str) -> bool:
        return classify(rel, self.shared.config.watch.ignore) is not None

    # -- deleted while nobody was looking ---------------------------------------------------

    def gone_dir(self, rel: str) -> None:
        """A folder was moved out of incoming/: its sources are gone as if deleted one by one
        (its manifests' downloads stop too)."""
        # Its files' later events are not about incoming/: their opens count no more.
        self.settler.forget_opens(time.monotonic(), rel)
        if not storable(rel):
            return  # nothing below it was recorded
        prefix = f"{rel}/"
        downloads = self.downloads
        rels = {*self.shared.state.paths_under(rel), *downloads.runs, *downloads.owner}
        forgotten = sum(
            self.publisher.forget(r, log_each=False)
            for r in sorted(rels)
            if r.startswith(prefix)
            and not self.dispatcher.running(r)  # its result finds it gone
            and not os.path.lexists(os.path.join(self.root, r))
        )
        if forgotten:
            fate = thumbnails_fate(self.shared.config)
            what = plural(forgotten, "source")
            log.info("%s moved away: forgot its %s (%s)", rel, what, fate)

    def gone_scanned(self, rels: list[str]) -> None:
        """Recorded sources a complete scan did not find (intake/unseen.py)."""
        self.unseen.gone_scanned(rels, self.settler)

    def _needs_no_render(self, job: Job) -> bool:
        """A new source (no record) that is one moved (its thumbnails follow), one whose
        thumbnails are already there, or a copy. One a scan saw moved, changed since, takes
        its record and thumbnails along and is rendered as an edit: False."""
        reuse = self.reuse
        if reuse.moved(job):
            return True
        if self.unseen.moved_then_changed(job):
            return False
        return self._adopted(job) or reuse.take(job)

    # -- ready to render -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Take what has settled: to the downloads stage, recorded as kept, or queued."""
        self.real_dirs.clear()  # symlinks may change between calls, not within one
        self.opted_out.clear()  # and so may opt-out files
        for rel, sig in self.settler.pop_ready(now):
            new = rel in self.fresh
            self.fresh.discard(rel)
            if self.dispatcher.holds(rel):
                self.settler.found(rel, now)  # look again once the running job is through
                continue
            record = self.shared.state.get(rel)
            if record is not None and record.signature == sig:
                continue  # done or failed for exactly this content
            if classify(rel, self.shared.config.watch.ignore) is Kind.MANIFEST:
                self.downloads.take(rel, sig)  # its URLs go to the downloader
                continue
            job = Job(rel, os.path.join(self.root, rel), sig, now, new=new)
            if self._refused(job):
                continue
            if record is None and self._needs_no_render(job):
                continue  # moved, its thumbnails already there, or a copy
            self.dispatcher.enqueue(job)
        if self.unseen:
            self.unseen.forget_unmoved(self.settler)
        self.reuse.tick(now)

    def _refused(self, job: Job) -> bool:
        """Sources not worth a worker: too big, or reached through a symlinked folder."""
        folder = os.path.dirname(job.path)
        real = self.real_dirs.get(folder) or self.real_dirs.setdefault(
            folder, os.path.realpath(folder)
        )
        if real != self.real_root and not real.startswith(self.real_root + os.sep):
            log.warning("skipping %s: reached through a symbolic link (to %s)", job.rel, real)
            return True
        resize = self.shared.config.resize
        video = formats.family(job.rel) is formats.Family.VIDEO
        limit, key = (
            (resize.max_video_bytes, "max_video_bytes")
            if video
            else (resize.max_file_bytes, "max_file_bytes")
        )
        if job.signature[0] > limit:
            reason = f"too large: {job.signature[0]} bytes exceeds {key} {limit}"
            self.publisher.fail(job, job.signature, Failure(FailKind.TOO_LARGE, reason))
            return True
        return False

    def _adopted(self, job: Job) -> bool:
        """A source with no record whose thumbnails are all there and newer than it (a lost
        database, a kill between rename and commit): record it done, render nothing."""
        shared = self.shared
        found = recovery.own_thumbnails(
            shared.config.paths.outgoing, job.rel, shared.spec, job.path, self.siblings
        )
        if found is None:
            return False
        outputs, written = found
        others = shared.state.outputs_near(plain_key(job.rel))
        if len(names.unowned(outputs, others)) < len(outputs):
            return False  # another source's row lists them: they are its thumbnails
        size = job.signature[0]
        shared.state.record_done(job.rel, job.signature, outputs, size, written, shared.settings)
        log.info(
            "kept %s: its %s already there",
            job.rel,
            plural(len(outputs), "thumbnail is", "thumbnails are"),
            extra={"source": job.rel},
        )
        self.downloads.on_rendered(job.rel)  # a manifest waiting for it need not wait on
        return True
