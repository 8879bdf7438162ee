"""The download stage, on the main loop: URL manifests become images in incoming/.

`Downloads` parses a settled manifest, skips URLs the state already has an outcome for, names
the new ones (thumbd.downloads.manifest) and hands them to the downloader's event loop
(downloader.py, on a thread of its own); it records every outcome posted back (only the main
loop writes the state) and logs per-manifest totals. It keeps the bookkeeping of each manifest
with URLs out (`_Run`) and of each downloaded file until its thumbnails are recorded (`owner`).

A downloaded file is renamed into `incoming/<dir>/<name>/`, where the normal image path takes it
(the main loop also touches it in the settler, as inotify can miss files in a folder created a
moment ago): downloads overlap with resizing, and the first thumbnails appear while later URLs
are still downloading. The manifest itself gets a row in `sources` once every URL it lists has
an outcome; until then a restart's scan finds it again and fetches only what is unfinished.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from thumbd.config import Config
from thumbd.downloads import manifest
from thumbd.downloads.downloader import Downloader, Fetched, UrlTask
from thumbd.downloads.fetch import size_text
from thumbd.downloads.files import TMP_DIR
from thumbd.downloads.outcomes import Downloaded, Failure
from thumbd.render.spec import Signature
from thumbd.store.state import State

log = logging.getLogger("thumbd.download")

__all__ = ["Downloads", "Fetched", "UrlTask"]


def shown(url: str, limit: int = 300) -> str:
    """A URL for the log: a line of a megabyte is recorded whole, but logged cut."""
    return url if len(url) <= limit else f"{url[:limit]}… ({len(url)} characters)"


@dataclass(slots=True)
class _Run:
    """A manifest with URLs out for download (in this process)."""

    manifest: str
    signature: Signature
    fetching: dict[str, str] = field(default_factory=dict)  # url -> stem
    rendering: set[str] = field(default_factory=set)  # downloaded, thumbnails not written yet
    outcomes: int = 0  # URLs done or failed in this process, for the totals line
    interrupted: bool = False  # some URLs stay pending (shutdown, manifest deleted)
    recorded: bool = False


class Downloads:
    """Manifests and their URLs, on the main loop: the only side that touches the state."""

    def __init__(self, config: Config, post: Callable[[Any], None]) -> None:
        self.config = config
        self.root = str(config.paths.incoming)
        self.post = post
        self.state: State
        self.downloader: Downloader | None = None
        self.runs: dict[str, _Run] = {}
        self.owner: dict[str, str] = {}  # downloaded file -> its manifest, until rendered
        self.bytes_downloaded = 0
        self.hinted = False  # the allow_private_addresses hint is logged once

    def start(self, state: State) -> None:
        """Clear what a killed daemon left half-downloaded (never under a final name)."""
        self.state = state
        shutil.rmtree(os.path.join(self.root, TMP_DIR), ignore_errors=True)

    def reconfigure(self, config: Config) -> None:
        """A reload. Under a new incoming/, the downloads under the old one end (cancelled:
        no file under a final name; their manifests stay pending there, read again whenever
        that folder is watched again) and manifests are read from the new one. New [download]
        settings apply from the next download started while none is in flight."""
        moved = str(config.paths.incoming) != self.root
        self.config = config
        if not moved:
            return
        self.stop_taking()
        self.cancel()
        self._retire()
        self.runs.clear()
        self.owner.clear()
        self.root = str(config.paths.incoming)
        self.start(self.state)

    def _retire(self) -> None:
        """Let the old downloader's event loop wind down away from the main loop."""
        old, self.downloader = self.downloader, None
        if old is not None:
            threading.Thread(target=old.stop, name="download-retire", daemon=True).start()

    def busy(self) -> bool:
        return any(run.fetching for run in self.runs.values())

    def in_flight(self) -> int:
        return sum(len(run.fetching) for run in self.runs.values())

    # -- a manifest settled ----------------------------------------------------------------

    def take(self, rel: str, sig: Signature) -> None:
        entries = self._read(rel, sig)
        if entries is None:
            return
        listed = {e.url for e in entries}
        self.state.forget_failed_urls(rel, keep=listed)
        records = self.state.url_records(rel)
        run = self.runs.setdefault(rel, _Run(rel, sig))
        run.signature, run.interrupted, run.recorded = sig, False, False
        self._drop_unlisted(run, listed)
        for e in entries:
            if e.error is not None and e.url not in records:
                self.state.record_url_failed(rel, e.url, e.error)
                log.warning("failed %s (line %d of %s): %s", shown(e.url), e.line, rel, e.error)
                run.outcomes += 1
        todo = [
            e.url
            for e in entries
            if e.error is None and e.url not in records and e.url not in run.fetching
        ]
        valid = [e.url for e in entries if e.error is None]
        self._submit(run, valid, todo, records)
        self._check_finished(run)

    def _drop_unlisted(self, run: _Run, listed: set[str]) -> None:
        """A manifest rewritten while its URLs download: the queued URLs it no longer lists are
        not fetched (those already in flight finish, as when a manifest is deleted)."""
        if self.downloader is None or run.fetching.keys() <= listed:
            return
        dropped = self.downloader.drop(run.manifest, keep_urls=listed)
        for task in dropped:
            run.fetching.pop(task.url, None)
        if dropped:
            log.info(
                "manifest %s: %d queued URLs are no longer listed; not downloading them",
                run.manifest,
                len(dropped),
            )

    def _read(self, rel: str, sig: Signature) -> list[manifest.Entry] | None:
        path = os.path.join(self.root, rel)
        try:
            with open(path, "rb") as f:
                data = f.read(manifest.MAX_MANIFEST_BYTES + 1)
            return manifest.parse(manifest.decode(data))
        except manifest.ManifestError as e:
            self.state.record_failed(rel, sig, str(e), sig[0])
            log.warning("failed %s: %s", rel, e)
        except OSError as e:
            log.info("cannot read manifest %s (%s); skipping it", rel, e.strerror)
        return None

    def _submit(
        self, run: _Run, listed: list[str], urls: list[str], records: dict[str, Any]
    ) -> None:
        """Download `urls`, named in a plan over every URL the manifest `listed`: a URL left
        pending by a restart gets the name it would have had in one go, not its plain name
        because the URL it clashes with is done already."""
        if not urls:
            return
        taken = [manifest.file_stem(r.file) for r in records.values() if r.file]
        stems = manifest.plan_names(listed, [*taken, *run.fetching.values()])
        folder = manifest.folder_for(run.manifest)
        downloader = self._downloader()
        for url in urls:
            task = UrlTask(run.manifest, url, folder, stems[url])
            if downloader.submit(task):
                run.fetching[url] = task.stem
        log.info(
            "manifest %s: %d URLs to download into %s/ (%d already have an outcome)",
            run.manifest,
            len(urls),
            folder,
            len(records),
        )

    def _downloader(self) -> Downloader:
        stale = self.downloader is not None and self.downloader.config != self.config.download
        if stale and not self.busy():  # reloaded with new settings: a new loop from now on
            self._retire()
        if self.downloader is None:  # no thread until the first manifest needs one
            self.downloader = Downloader(self.config.download, self.root, self.post)
            self.downloader.start()
        return self.downloader

    # -- outcomes --------------------------------------------------------------------------

    def on_fetched(self, message: Fetched) -> str | None:
        """Record an outcome; return the downloaded file (relative to incoming/) to take."""
        task, result = message.task, message.result
        run = self.runs.get(task.manifest)
        if run is not None:
            run.fetching.pop(task.url, None)
        taken: str | None = None
        if isinstance(result, Downloaded):
            taken = self._done(task, result, run)
        elif isinstance(result, Failure):
            self._failed(task, result.reason, run)
        elif run is not None:
            run.interrupted = True  # cancelled: stays pending for the next start
        if run is not None:
            self._check_finished(run)
        return taken

    def _failed(self, task: UrlTask, reason: str, run: _Run | None) -> None:
        self.state.record_url_failed(task.manifest, task.url, reason)
        log.warning("failed %s (%s): %s", shown(task.url), task.manifest, reason)
        if run is not None:
            run.outcomes += 1
        if reason.startswith("refused: private address") and not self.hinted:
            self.hinted = True
            log.info("(hosts on private networks need [download] allow_private_addresses = true)")

    def _done(self, task: UrlTask, result: Downloaded, run: _Run | None) -> str:
        self.state.record_url_done(task.manifest, task.url, result.file, result.size)
        self.bytes_downloaded += result.size
        log.info("downloaded %s -> %s (%s)", task.url, result.file, size_text(result.size))
        if run is not None:
            run.rendering.add(result.file)
            run.outcomes += 1
            self.owner[result.file] = task.manifest
        return result.file

    def on_rendered(self, rel: str) -> None:
        """The image path recorded `rel` (done or failed)."""
        owner = self.owner.pop(rel, None)
        run = self.runs.get(owner) if owner is not None else None
        if run is not None:
            run.rendering.discard(rel)
            self._check_finished(run)

    def on_deleted(self, rel: str) -> None:
        """A manifest was removed: drop its queued URLs and forget its failures."""
        self.state.forget_failed_urls(rel)
        run = self.runs.get(rel)
        if run is None or self.downloader is None:
            return
        for task in self.downloader.drop(rel):
            run.fetching.pop(task.url, None)
        run.interrupted = True
        self._check_finished(run)

    def _check_finished(self, run: _Run) -> None:
        if run.fetching:
            return
        if not run.interrupted and not run.recorded:
            self.state.record_manifest(run.manifest, run.signature)
            run.recorded = True
        if run.rendering and not run.interrupted:
            return
        if run.outcomes:
            self._log_totals(run.manifest)
        del self.runs[run.manifest]
        for file in run.rendering:
            self.owner.pop(file, None)

    def _log_totals(self, rel: str) -> None:
        for t in self.state.manifest_totals(rel):
            log.info(
                "manifest %s: %d URLs done, %d failed ◆ downloaded %s, thumbnails %s",
                t.manifest,
                t.done,
                t.failed,
                size_text(t.bytes_downloaded),
                size_text(t.bytes_out),
            )

    # -- shutdown --------------------------------------------------------------------------

    def stop_taking(self) -> None:
        """Start no more downloads; what was queued stays pending (the manifest is on disk).

        No manifest is recorded complete from here on, even if its last downloads finish
        while draining: the next start re-reads it, finds every URL done and records it then.
        """
        for each in self.runs.values():
            each.interrupted = True
        if self.downloader is None:
            return
        for task in self.downloader.stop_taking():
            run = self.runs.get(task.manifest)
            if run is not None:
                run.fetching.pop(task.url, None)

    def cancel(self) -> None:
        if self.downloader is not None:
            self.downloader.cancel()

    def stop(self) -> None:
        if self.downloader is not None:
            self.downloader.stop()
        shutil.rmtree(os.path.join(self.root, TMP_DIR), ignore_errors=True)
