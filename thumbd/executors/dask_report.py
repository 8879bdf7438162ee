"""What the Dask executor tells people: a cluster that takes no work, and Dask's errors in a line.

`Outage` logs that the cluster cannot take work now once, then every LOG_EVERY seconds (not
once per file), says how many files wait (none is failed for it), logs when work flows again,
and answers `thumbd status` with why and since when. It belongs to the executor's loop thread;
`waiting` may be called from any thread.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import KilledWorker

log = logging.getLogger("thumbd.dask")

LOG_EVERY = 60.0  # seconds between repeated "still unreachable" lines


class Outage:
    """Whether the cluster at `where` takes work, as the executor last found it."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._down_since: float | None = None
        self._down_why = ""
        self._down_logged = 0.0

    def trouble(self, why: str, waiting: int) -> None:
        """The cluster cannot take work now (`waiting` files wait): log it, once, then every
        LOG_EVERY seconds."""
        now = time.monotonic()
        self._down_why = why
        if self._down_since is None:
            self._down_since = now
        elif now - self._down_logged < LOG_EVERY:
            return
        self._down_logged = now
        log.warning(
            "Dask cluster at %s: %s; %d files wait (nothing is failed), retrying",
            self._where,
            why,
            waiting,
        )

    def recovered(self, waiting: int) -> None:
        """The cluster took work (or nothing waits): log that it is back, if it was down."""
        if self._down_since is None:
            return
        log.info(
            "Dask cluster at %s takes work again after %.1f s%s",
            self._where,
            time.monotonic() - self._down_since,
            f"; catching up on {waiting} files" if waiting else "",
        )
        self._down_since = None

    def waiting(self) -> str | None:
        """Why the cluster takes no work now and since when, for `thumbd status` (any thread)."""
        since, why = self._down_since, self._down_why
        if since is None:
            return None
        return f"the Dask cluster at {self._where} ({time.monotonic() - since:.0f} s so far): {why}"


def killed(e: KilledWorker) -> str:
    """A KilledWorker in words: how many workers died running the task."""
    try:
        deaths = e.allowed_failures + 1
    except (IndexError, TypeError):
        return "KilledWorker"
    return f"KilledWorker: {'a worker' if deaths == 1 else f'{deaths} workers'} died running it"


def brief(e: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
