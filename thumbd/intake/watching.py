"""Watching incoming/: the observer thread kept alive, and the scans that find what events
cannot tell (at start-up, periodically, after a queue overflow or a folder made readable).

Both post to the main loop's inbox; this stage decides when to start them and says when it
next needs the loop (`next_due`). Runs on the main loop only.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from thumbd.intake import scanner
from thumbd.intake.tracker import Tracker
from thumbd.intake.watcher import Unlisted, Watcher
from thumbd.service.messages import Gone, Ignored, ScanBatch
from thumbd.service.shared import Shared

log = logging.getLogger("thumbd")

RESCAN_GAP = 2.0  # at least this long (or one scan's duration) between back-to-back rescans
OBSERVER_RETRY_MAX = 30.0  # seconds between tries to restart an observer that cannot start


class Watching:
    """The observer (not under `once`) and the scanner thread."""

    def __init__(self, shared: Shared, tracker: Tracker) -> None:
        self.shared = shared
        self.tracker = tracker
        self.watcher: Watcher | None = None
        self.scan_stop = threading.Event()
        self.scan_thread: threading.Thread | None = None
        self.rescan_wanted = False
        self.scan_found = 0
        self.gone: list[str] = []  # what the running scan reported gone, until its last batch
        self.scan_started = 0.0
        self.next_rescan = 0.0
        self.stale_watches = False  # a folder moved out keeps its watches until a new observer
        self.observer_retry_at = 0.0
        self.observer_backoff = 0.0

    @property
    def root(self) -> str:
        return self.tracker.root

    def start(self) -> None:
        if not self.shared.once:
            self.watcher = self._new_watcher()
            self.watcher.start()
            self._observing()
        self.start_scan()

    def stop(self) -> None:
        """No more events or scans (a drain or the end)."""
        if self.watcher is not None:
            self.watcher.stop()
        self.scan_stop.set()

    def join(self) -> None:
        self.stop()
        if self.scan_thread is not None:
            self.scan_thread.join()

    def busy(self) -> bool:
        return self.scan_thread is not None

    def alive(self) -> bool:
        return self.watcher is None or self.watcher.alive()

    def next_due(self) -> float | None:
        if self.shared.once:
            return None
        if self.watcher is not None and not self.watcher.alive():
            return min(self.next_rescan, self.observer_retry_at)
        return self.next_rescan

    # -- scans -----------------------------------------------------------------------------

    def start_scan(self) -> None:
        if self.scan_thread is not None:
            self.rescan_wanted = True
            return
        self.scan_started = time.monotonic()
        self.next_rescan = self.scan_started + self.shared.config.watch.rescan_interval
        self.scan_found = 0
        self.scan_thread = threading.Thread(target=self._scan, name="scanner", daemon=True)
        self.scan_thread.start()

    def on_gone(self, rels: list[str]) -> None:
        """Recorded sources the scan did not find: forgotten once its last paths are in (one
        of them may be such a source, moved: output/reuse.py finds it by identity)."""
        self.gone.extend(rels)

    def on_scan(self, batch: ScanBatch) -> None:
        self.tracker.found(batch.rels)
        self.scan_found += len(batch.rels)
        if batch.final:
            gone, self.gone = self.gone, []
            if gone:
                self.tracker.gone_scanned(gone)
            log.info("scan of %s: %d to look at", self.root, self.scan_found)
            self.scan_thread = None
            if self.rescan_wanted:
                self.rescan_wanted = False
                self._rescan_soon(time.monotonic())

    def on_overflow(self) -> None:
        self.tracker.settler.forget_opens(time.monotonic())  # closes may be among what was lost
        if not self.rescan_wanted:  # once per scan, not once per overflow: floods repeat
            log.warning("inotify queue overflowed: events were lost; rescanning %s", self.root)
        self.start_scan()

    def _rescan_soon(self, now: float) -> None:
        """Events were lost while a scan ran: scan again, but not back to back. In a sustained
        flood the queue overflows again and again; a pause as long as the last scan (at least
        RESCAN_GAP) keeps scans from taking the CPU the files need, and the next scan still
        starts after the last overflow."""
        if self.shared.once:
            self.start_scan()
            return
        gap = max(RESCAN_GAP, now - self.scan_started)
        self.next_rescan = min(self.next_rescan, now + gap)

    def _scan(self) -> None:
        inbox, config = self.shared.inbox, self.shared.config
        try:
            scanner.scan(
                self.root,
                config.state_db,
                config.watch.ignore,
                lambda rels, final: inbox.put(ScanBatch(rels, final)),
                self.scan_stop,
                gone=lambda rels: inbox.put(Gone(rels)),
                unlisted=lambda rel: inbox.put(Unlisted(rel)),
                ignored=lambda counts: inbox.put(Ignored(dict(counts))),
            )
        except Exception:
            log.exception("scan of %s failed", self.root)
            inbox.put(ScanBatch([], True))

    # -- the observer ----------------------------------------------------------------------

    def on_dir_gone(self) -> None:
        """A folder moved out of incoming/ took its inotify watches along (watchdog keeps
        them): the next periodic rescan starts a new observer."""
        self.stale_watches = self.watcher is not None and not self.watcher.polling

    def on_dir_changed(self, rel: str) -> None:
        """A folder's permissions changed: if a folder that could not be listed can be now, it
        has no watch (watchdog does not retry): watch the tree again and rescan, which takes
        its files and finds any folder still unreadable."""
        prefix = f"{rel}/"
        unlisted = self.tracker.unlisted
        readable = [
            u
            for u in unlisted
            if (u == rel or u.startswith(prefix)) and scanner.listable(os.path.join(self.root, u))
        ]
        if not readable or self.watcher is None or self.watcher.polling:
            return  # polling sees them anyway
        unlisted.difference_update(readable)
        log.info(
            "%s can be read now; watching it and looking at its files",
            ", ".join(sorted(readable)),
        )
        self.rewatch()

    def tick(self, now: float) -> None:
        if self.watcher is not None and not self.watcher.alive() and not self.shared.stopping:
            self._restart_observer(now)
        if self.shared.once or now < self.next_rescan:
            return
        if self.watcher is not None:
            self.watcher.check_limits()  # new folders may have reached the watch limit
            self._observing()
        if self.stale_watches and self.watcher is not None:
            # Folders moved out of incoming/ took their watches along (watchdog keeps
            # them): a new observer watches only what is here. Then the rescan as usual.
            self.stale_watches = False
            log.info("folders were moved out of %s; renewing its watches", self.root)
            self.rewatch()
        else:
            self.start_scan()

    def rewatch(self) -> None:
        """Watch incoming/ (perhaps another folder or another way now) with a new observer,
        then scan it."""
        if self.watcher is None:
            return
        self.watcher.stop()
        self.watcher = self._new_watcher()
        try:
            self.watcher.start()
        except Exception as e:
            log.error("cannot watch %s: %s", self.root, e)  # tick() retries
        self._observing()
        self.start_scan()

    def settings_changed(self, old_interval: float) -> None:
        interval = self.shared.config.watch.rescan_interval
        if interval != old_interval:
            self.next_rescan = time.monotonic() + interval

    def _observing(self) -> None:
        if self.watcher is not None:
            self.tracker.observing(self.watcher.generation)

    def _new_watcher(self) -> Watcher:
        return Watcher(self.root, self.shared.inbox, polling=self.shared.config.watch.polling)

    def _restart_observer(self, now: float) -> None:
        """Restart a dead observer, backing off while it cannot start (incoming/ gone, say)."""
        assert self.watcher is not None
        if now < self.observer_retry_at:
            return
        try:
            self.watcher.restart()
        except Exception as e:
            self.observer_backoff = min(max(1.0, 2 * self.observer_backoff), OBSERVER_RETRY_MAX)
            self.observer_retry_at = now + self.observer_backoff
            log.error(
                "cannot restart the observer on %s: %s; retrying in %.0f s",
                self.root,
                e,
                self.observer_backoff,
            )
            return
        self.observer_backoff = 0.0
        self._observing()
        self.start_scan()

    def kill_observer(self) -> None:
        """Test hook (SIGUSR2, see testhooks.hooks_enabled): stop the observer as a crash would."""
        observer = self.watcher.observer if self.watcher is not None else None
        if observer is not None:
            log.warning("test hook: stopping the observer thread")
            observer.stop()
            observer.join(timeout=10)
