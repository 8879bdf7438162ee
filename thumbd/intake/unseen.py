"""Recorded sources a complete scan did not find: gone, or moved where thumbd did not see it.

A scan posts the recorded paths it did not find (`Gone`). One whose identity (size, mtime_ns,
inode) a path being settled has is that source, moved while thumbd was stopped or its events
were lost: it waits for that path to be taken, and then output/reuse.py moves its row and
thumbnails (nothing rendered). The rest are forgotten at once. Two things can happen to the
file before it is taken, and each has its answer here:

- it changes (same inode, another size or mtime): a move, then an edit. Its row and thumbnails
  move to it (none stay under the old name, whatever on_delete says: a move is not a deletion)
  and it is rendered once, as any edited source;
- it goes (deleted, moved out): the waiting row is forgotten then, checked after each tick's
  takes, not left in the state until the next periodic rescan.

Kept apart from the tracker, which owns the settler and asks this at the three points: a scan's
gone paths, a new source about to be rendered, and the end of each tick. Main loop only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from thumbd.intake.settle import Settler
from thumbd.output.moves import Mover
from thumbd.output.publish import thumbnails_fate
from thumbd.service.messages import Job
from thumbd.service.shared import Shared
from thumbd.text import plural

log = logging.getLogger("thumbd")


class Unseen:
    def __init__(
        self,
        shared: Shared,
        mover: Mover,
        holds: Callable[[str], bool],
        forget: Callable[[str], bool],
    ) -> None:
        self.shared = shared
        self.mover = mover
        self.holds = holds  # the dispatcher's: a job for this path is queued or in flight
        self.forget = forget  # the publisher's (log_each=False): True when a record went
        self.waiting: set[str] = set()  # gone from a scan, its identity seen settling

    def __bool__(self) -> bool:
        return bool(self.waiting)

    def clear(self) -> None:
        self.waiting.clear()

    def _absent(self, rel: str, settler: Settler) -> bool:
        """`rel` has no file, no job and nothing settling: a row only."""
        root = str(self.shared.config.paths.incoming)
        return (
            not self.holds(rel)
            and rel not in settler
            and not os.path.lexists(os.path.join(root, rel))
        )

    def gone_scanned(self, rels: list[str], settler: Settler) -> None:
        """Recorded sources a complete scan did not find. Those whose file is settling under
        another path (its identity) wait; the others are forgotten."""
        state = self.shared.state
        moved = settler.identities()
        gone = []
        for rel in rels:
            if not self._absent(rel, settler):
                continue
            record = state.get(rel)
            if record is not None and record.signature in moved:
                self.waiting.add(rel)
            else:
                gone.append(rel)
        self._forget(gone, "scan")

    def moved_then_changed(self, job: Job) -> bool:
        """`job`'s file is a waiting source's (its inode) that changed before it was taken:
        its row and thumbnails move here, and it is rendered as an edit. False otherwise."""
        state = self.shared.state
        root = str(self.shared.config.paths.incoming)
        for rel in self.waiting:
            record = state.get(rel)
            if record is None or record.signature[2] != job.signature[2]:
                continue
            if os.path.lexists(os.path.join(root, rel)) or self.holds(rel):
                continue
            self.waiting.discard(rel)
            self.mover.move_file(rel, job.rel, replace=lambda rel: None)
            log.debug("moved %s -> %s (found by a scan), changed since", rel, job.rel)
            return True
        return False

    def forget_unmoved(self, settler: Settler) -> None:
        """Waiting sources whose file is no longer settling (deleted, or moved out, before it
        was taken): forgotten. Called after what settled was taken, so that a move found then
        has moved its row; a file still settling (changed or not: its inode tells) keeps its
        source waiting."""
        state = self.shared.state
        settling = {sig[2] for sig in settler.identities()}
        gone = []
        for rel in list(self.waiting):
            record = state.get(rel)
            if record is not None and record.signature[2] in settling:
                continue
            self.waiting.discard(rel)
            if record is not None and self._absent(rel, settler):
                gone.append(rel)
        self._forget(gone, "a file found moved went before it was taken")

    def _forget(self, rels: list[str], why: str) -> None:
        if not rels:
            return
        with self.shared.state.transaction():
            forgotten = sum(self.forget(rel) for rel in rels)
        if forgotten:
            fate = thumbnails_fate(self.shared.config)
            gone = plural(
                forgotten, "recorded source no longer exists", "recorded sources no longer exist"
            )
            log.info("%s: %s; forgot them (%s)", why, gone, fate)
