"""Publishing results: a render's thumbnails written into outgoing/ and recorded, a failure
recorded, a deleted source forgotten (and its thumbnails removed, if so configured), and
results held while outgoing/ is full.

Runs on the main loop only. A source counts as done once its thumbnails are renamed into place
and its record says so; until then the filesystem is the queue of record.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from thumbd.config import Config
from thumbd.downloads.stage import Downloads
from thumbd.intake import live
from thumbd.intake.settle import Kind, classify, signature
from thumbd.output import names
from thumbd.output.writer import NO_SPACE, UnsafePath, Writer, plain_key
from thumbd.render.placeholder import with_motion
from thumbd.render.spec import FailKind, Failure, RenderResult, Signature
from thumbd.service import metrics
from thumbd.service.messages import Job
from thumbd.service.shared import Shared
from thumbd.text import plural

log = logging.getLogger("thumbd")

DISK_FULL_RETRY = 5.0  # seconds between tries to write while outgoing/ is full
# A decode that fails on a file modified this recently was most likely reading it while it was
# still being written: the file settles again and is tried once more before it counts as failed.
STILL_WRITTEN = 10.0
_UNREADABLE_YET = (FailKind.EMPTY, FailKind.TRUNCATED, FailKind.UNDECODABLE, FailKind.UNIDENTIFIED)


class Publisher:
    """Writes, records and forgets; holds results while outgoing/ is full."""

    # A source changed while it rendered or waited: settle it again (the tracker's; the
    # daemon binds it, since the tracker in turn hands its failures and deletions here).
    # With `quiet`, it must also stay unchanged that long first (a file still being written).
    resettle: Callable[..., None]

    def __init__(self, shared: Shared, writer: Writer, downloads: Downloads) -> None:
        self.shared = shared
        self.writer = writer
        self.downloads = downloads
        self.unwritten: deque[tuple[Job, RenderResult]] = deque()
        self.disk_full_until = 0.0
        self.disk_full_logged = 0.0
        self.spared: dict[str, Signature] = {}  # failed while fresh: tried again at this signature
        # Told the source whose thumbnails were written or removed (the gallery's).
        self.changed: Callable[[str], None] = lambda rel: None
        # Keeps a forgotten source's thumbnails for a while (output/reuse.Reuse.hold; True
        # when it took them away, as `remove` asks).
        self.hold: Callable[[str, bool], bool] = lambda rel, remove: False

    # -- the stage's clock -----------------------------------------------------------------

    def next_due(self) -> float | None:
        return self.disk_full_until if self.unwritten else None

    def busy(self) -> bool:
        return bool(self.unwritten)

    def tick(self, now: float) -> None:
        """Try the held results again once outgoing/ may have room."""
        if not self.unwritten or now < self.disk_full_until:
            return
        while self.unwritten:
            job, result = self.unwritten.popleft()
            if not self._still_the_same(job, result):
                continue
            if not self.write(job, result):
                self.unwritten.rotate(1)  # keep order: the one that failed goes first again
                return
        log.info("%s has room again; catching up", self.shared.config.paths.outgoing)

    # -- results ---------------------------------------------------------------------------

    def publish(self, job: Job, result: RenderResult) -> None:
        """A render's result for `job`: written and recorded, unless the source changed."""
        now_sig = signature(job.path)
        if now_sig is None:
            log.debug("%s disappeared before it was done; skipping it", job.rel)
            self.forget(job.rel)
            return
        if result.signature is None and now_sig == job.signature and result.failure is not None:
            self.fail(job, now_sig, result.failure)  # could not even open it (permissions)
            return
        if result.signature != job.signature or now_sig != result.signature:
            self.resettle(job.rel)
            return
        if result.failure is None:
            self.write(job, result)
        elif self._still_written(job.rel, now_sig, result.failure):
            log.info(
                "%s: %s, but it was modified moments ago: trying it again once it settles",
                job.rel,
                result.failure.reason,
                extra={"source": job.rel},
            )
            self.resettle(job.rel, quiet=STILL_WRITTEN)
        else:
            self.fail(job, now_sig, result.failure)

    def _still_written(self, rel: str, sig: Signature, failure: Failure) -> bool:
        """Whether to take a failed decode of `rel` for one of a file still being written:
        once per signature, for a file modified within STILL_WRITTEN seconds."""
        if failure.kind not in _UNREADABLE_YET or self.spared.get(rel) == sig:
            return False
        if time.time() - sig[1] / 1e9 >= STILL_WRITTEN:
            return False
        self.spared[rel] = sig
        return True

    def _still_the_same(self, job: Job, result: RenderResult) -> bool:
        now_sig = signature(job.path)
        if now_sig is None:
            self.forget(job.rel)
            return False
        if now_sig != result.signature:
            self.resettle(job.rel)
            return False
        return True

    def write(self, job: Job, result: RenderResult) -> bool:
        """Write and record; False if outgoing/ is full (the result is held)."""
        state = self.shared.state
        cid = content_id(result)
        still = self._still_it_moves(job, result, cid)
        motion = None if still is not None else self._motion_of(job.rel, cid)
        if motion is not None:
            self._take_back(motion, paired=False)  # it made thumbnails before its still came
        near = state.outputs_near(plain_key(job.rel))  # its row and its same-stem siblings'
        own = near.pop(job.rel, ())
        if still is not None:
            self._record_motion(job, result, still, own, near, cid)
            return True
        if motion is not None and result.index is not None:
            result = replace(result, index=with_motion(result.index, motion.rpartition("/")[2]))
        labels, index = names.labels(result), result.index is not None
        try:
            chosen = names.choose(job.rel, labels, index, own, near)
        except names.NamesTaken as e:
            self.fail(job, job.signature, Failure(FailKind.NAMES_TAKEN, str(e)))
            return True
        files = names.files(chosen, result)
        try:
            written = self.writer.write_all(files)
        except UnsafePath as e:
            self.fail(job, job.signature, Failure(FailKind.UNWRITABLE, f"unsafe output path: {e}"))
            return True
        except OSError as e:
            if e.errno in NO_SPACE:
                self._hold(job, result, e)
                return False
            folder = self.writer.root / os.path.dirname(files[0][0])  # all in one folder
            reason = f"cannot write thumbnail in {folder}: {e.strerror}"
            self.fail(job, job.signature, Failure(FailKind.UNWRITABLE, reason))
            return True
        if chosen.note is not None:
            log.info("%s", chosen.note, extra={"source": job.rel})
        self._remove_stale(own, chosen.all, near)
        assert result.signature is not None
        size = result.signature[0]
        settings = job.settings or self.shared.settings
        outputs = list(chosen.all)
        state.record_done(
            job.rel, result.signature, outputs, size, written, settings, cid, result.digest
        )
        self.spared.pop(job.rel, None)
        self.changed(job.rel)
        self._count_done(job, result, written)
        self.downloads.on_rendered(job.rel)
        return True

    # -- Live Photos (intake/live.py) ------------------------------------------------------

    def _motion_of(self, rel: str, cid: str | None) -> str | None:
        """The motion of the still `rel`: the clip recorded with its content identifier, else
        a same-stem MOV beside it that carries no other identifier."""
        if self.shared.config.thumbnails.live_photos != "still" or not live.is_still_name(rel):
            return None
        root, state = str(self.shared.config.paths.incoming), self.shared.state
        if cid is not None:
            found = live.partner(root, rel, state.with_content_id(cid), motion=True)
            if found is not None:
                return found
        motion = live.motion_of(root, rel)
        return None if motion is None or live.differ(cid, state.content_id(motion)) else motion

    def _still_it_moves(self, job: Job, result: RenderResult, cid: str | None) -> str | None:
        """The still whose motion this clip is, if it is one: the still recorded with its
        content identifier, else a same-stem still beside it (that carries no other) when the
        clip is short."""
        config = self.shared.config
        if config.thumbnails.live_photos != "still" or result.facts.get("kind") != "video":
            return None
        root, state = str(config.paths.incoming), self.shared.state
        if cid is not None:
            found = live.partner(root, job.rel, state.with_content_id(cid), motion=False)
            if found is not None:
                return found
        duration = result.facts.get("duration")
        if not isinstance(duration, int | float) or duration > live.LIVE_MAX_SECONDS:
            return None
        still = live.still_of(root, job.rel)
        return None if still is None or live.differ(cid, state.content_id(still)) else still

    def _record_motion(
        self,
        job: Job,
        result: RenderResult,
        still: str,
        own: tuple[str, ...],
        near: dict[str, tuple[str, ...]],
        cid: str | None,
    ) -> None:
        """The motion half of a Live Photo: no thumbnails of its own (any it had go)."""
        self._remove_stale(own, (), near)
        assert result.signature is not None
        size, settings = result.signature[0], self.shared.settings
        self.shared.state.record_done(job.rel, result.signature, [], size, 0, settings, cid)
        self.changed(job.rel)
        self.shared.stats.finished += 1
        log.info(
            "%s is the motion of Live Photo %s: no thumbnails of its own",
            job.rel,
            still,
            extra={"source": job.rel},
        )
        self._name_motion_in_index(still, job.rel)

    def _name_motion_in_index(self, still: str, motion: str) -> None:
        """The still was written before its motion came: its index names the motion now."""
        record = self.shared.state.get(still)
        index = next((n for n in record.outputs if n.endswith(".json")), None) if record else None
        if index is None:
            return
        try:
            data = (self.writer.root / index).read_bytes()
            self.writer.write(index, with_motion(data, motion.rpartition("/")[2]))
        except (OSError, ValueError, KeyError) as e:  # gone, or not an index thumbd wrote
            log.warning("cannot name the motion %s in %s: %s", motion, index, e)

    def _take_back(self, motion: str, *, paired: bool) -> None:
        """Look at a Live Photo's motion file again: its still arrived after it had thumbnails
        of its own (paired=False: they go now, so the still gets the plain names; its new
        render decides whether it is the still's motion), or its still is gone (paired=True:
        it gets its own)."""
        state = self.shared.state
        record = state.get(motion)
        if record is None or bool(record.outputs) == paired:
            return
        state.forget(motion)
        others = state.outputs_near(plain_key(motion))
        for name in names.unowned(record.outputs, others):
            self.writer.remove(name)
        self.changed(motion)
        self.resettle(motion)

    def _count_done(self, job: Job, result: RenderResult, written: int) -> None:
        size = result.signature[0] if result.signature is not None else 0
        stats = self.shared.stats
        stats.finished += 1
        stats.bytes_in += size
        stats.bytes_out += written
        metrics.file_done(size, written, result.cpu_seconds)
        log.info(
            "done %s: %s in %.0f ms (waited %.0f ms, render %.0f ms), %s -> %s",
            job.rel,
            plural(len(result.thumbnails), "thumbnail"),
            (time.monotonic() - job.seen) * 1000,
            max(0.0, job.sent - job.seen) * 1000,  # behind other files, for a worker
            result.cpu_seconds * 1000,
            size_text(size),
            size_text(written),
            extra={"source": job.rel, "bytes_in": size, "bytes_out": written},
        )

    def _remove_stale(
        self, own: tuple[str, ...], written: tuple[str, ...], near: dict[str, tuple[str, ...]]
    ) -> None:
        """Thumbnails an earlier version of this source had, this one does not, and no other
        source lists (a state from before sources of the same stem got names of their own)."""
        for old in names.unowned(set(own) - set(written), near):
            self.writer.remove(old)

    def fail(self, job: Job, sig: Signature, failure: Failure) -> None:
        self.spared.pop(job.rel, None)
        if signature(job.path) is None:
            self.forget(job.rel)  # deleted while it hung or crashed: skipped, not failed
            return
        reason = self._worded(failure)
        self.shared.state.record_failed(job.rel, sig, reason, sig[0])
        self.shared.stats.finished += 1
        metrics.file_failed(reason)
        log.warning("failed %s: %s", job.rel, reason, extra={"source": job.rel, "reason": reason})
        self.downloads.on_rendered(job.rel)

    def _worded(self, failure: Failure) -> str:
        limit = self.shared.config.resize.max_memory_mb
        if failure.kind is FailKind.OUT_OF_MEMORY and limit:
            return f"{failure.reason} (over [resize] max_memory_mb = {limit})"
        return failure.reason

    # -- deleted sources -------------------------------------------------------------------

    def forget(self, rel: str, *, log_each: bool = True, replaced: bool = False) -> bool:
        """A source is gone: forget its record; `[thumbnails] on_delete` says what happens to
        its thumbnails (`replaced`: another source was moved onto its path, and they go). A
        source never processed has no record: nothing to say."""
        self.spared.pop(rel, None)
        config = self.shared.config
        if classify(rel, config.watch.ignore) is Kind.MANIFEST:
            self.downloads.on_deleted(rel)  # drop its queued URLs, forget its failures
        else:
            self.downloads.on_rendered(rel)  # a downloaded image no manifest should wait for
        state = self.shared.state
        cid = state.content_id(rel)
        if state.get(rel) is None:
            return False
        motion = self._motion_of(rel, cid)
        # A Live Photo's still: its motion becomes a video of its own, whose thumbnails take
        # the still's names (kept, they would pass for the motion's own: output/names.py).
        remove = config.thumbnails.on_delete == "remove" or motion is not None or replaced
        held = self.hold(rel, remove)  # candidates for a while: it may come back (a move)
        record = state.forget(rel)
        if record is None:
            return False
        if remove:  # not the names a sibling's row lists too (a state from before names.py)
            for name in (
                () if held else names.unowned(record.outputs, state.outputs_near(plain_key(rel)))
            ):
                self.writer.remove(name, prune=True)
            self.changed(rel)
        if motion is not None:
            self._take_back(motion, paired=True)
        if log_each:
            what = "removed its thumbnails" if remove else "its thumbnails stay"
            log.info("removed %s: forgetting it (%s)", rel, what)
        return True

    # -- a full disk -----------------------------------------------------------------------

    def _hold(self, job: Job, result: RenderResult, e: OSError) -> None:
        self.unwritten.append((job, result))
        now = time.monotonic()
        self.disk_full_until = now + DISK_FULL_RETRY
        if now - self.disk_full_logged >= 60:
            self.disk_full_logged = now
            log.error(
                "%s is full (%s): %s to be written; retrying every %.0f s",
                self.shared.config.paths.outgoing,
                errno.errorcode.get(e.errno or 0, e.errno),
                plural(len(self.unwritten), "file waits", "files wait"),
                DISK_FULL_RETRY,
            )


def content_id(result: RenderResult) -> str | None:
    """The Live Photo content identifier the render found (render/apple.py), if any."""
    value = result.facts.get("content_id")
    return value if isinstance(value, str) else None


def thumbnails_fate(config: Config) -> str:
    """How a log line about forgotten sources ends, by `[thumbnails] on_delete`."""
    if config.thumbnails.on_delete == "remove":
        return "and removed their thumbnails"
    return "their thumbnails stay"


def size_text(n: int) -> str:
    """Bytes for people: 812 B, 14.2 KB, 5.6 MB."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB"):
        value /= 1000
        if value < 1000 or unit == "GB":
            break
    return f"{value:.1f} {unit}"
