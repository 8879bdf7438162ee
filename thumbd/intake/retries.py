"""`thumbd retry` and `redo` requests: the command only writes to the database; SQLite's
data_version tells the daemon's connection that another one committed, so no signal, pid file
or restart is involved. This stage looks every RETRY_CHECK seconds."""

from __future__ import annotations

import logging

from thumbd.intake.tracker import Tracker
from thumbd.service.shared import Shared
from thumbd.text import plural

log = logging.getLogger("thumbd")

RETRY_CHECK = 0.5  # seconds between looks for `thumbd retry` requests


class Retries:
    def __init__(self, shared: Shared, tracker: Tracker) -> None:
        self.shared = shared
        self.tracker = tracker
        self.next_check = 0.0

    def next_due(self) -> float:
        return self.next_check

    def tick(self, now: float) -> None:
        if now < self.next_check:
            return
        self.next_check = now + RETRY_CHECK
        state = self.shared.state
        if not state.changed_elsewhere():
            return
        state.recount_run()  # `thumbd retry` took failures of this run away
        rels = state.take_retries()
        if rels:
            log.info("looking again at %s (thumbd retry or redo)", plural(len(rels), "file"))
        self.tracker.found(rels)
