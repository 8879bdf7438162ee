"""Health: the state folder kept as the daemon found it, and what the live figures say.

Someone may remove or replace files of the state folder under a running daemon; the daemon's
health check decides whether systemd's watchdog is pinged (service/monitor.py).
"""

from __future__ import annotations

import logging

from thumbd.service import pidfile
from thumbd.service.shared import Shared

log = logging.getLogger("thumbd")

STATE_CHECK = 1.0  # seconds between looks whether the state's files are still the ones open


class StateKeeper:
    """A database that is no longer the one open is opened (or rebuilt) again, like at a start,
    and a lock that is gone is made again, so that no second daemon can start on this state
    and `thumbd status` and `stop` still find this one."""

    def __init__(self, shared: Shared, lock: pidfile.StateLock) -> None:
        self.shared = shared
        self.lock = lock
        self.next_check = 0.0
        self.reopened = False  # set when the database was opened again: scan for what it lost

    def next_due(self) -> float:
        return self.next_check

    def tick(self, now: float) -> None:
        if now < self.next_check:
            return
        self.next_check = now + STATE_CHECK
        shared = self.shared
        db = shared.config.state_db
        if not shared.state.is_open_at(db):
            log.warning("state database %s was removed or replaced; opening it again", db)
            shared.state.commit()
            shared.state.close()
            shared.open_state()
            self.reopened = True
        try:
            if self.lock.keep():
                log.warning("%s was removed; made it again", self.lock.path)
        except (pidfile.AlreadyRunning, OSError) as e:
            log.error("cannot lock %s again: %s", self.lock.path, e)
