"""This run's counts: the sources a daemon's run recorded, by what their record says now.

A source counts once, as what it ended as: failed and then done is done; deleted, or cleared by
`thumbd retry`, it no longer counts. So "this run" never disagrees with the totals. A part of
store.state.State, on its connection: State calls `_unrun` before a record of a path is
replaced or deleted and `_ran` after one is made.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

from thumbd.store.records import DONE, FAILED, Totals


@dataclass(slots=True)
class RunCounts:
    """The records made at or after `since` (Unix time, the run's start), done and failed."""

    since: float
    done: int = 0
    failed: int = 0

    def add(self, status: str, updated: float, n: int) -> None:
        if updated < self.since:
            return
        if status == DONE:
            self.done += n
        elif status == FAILED:
            self.failed += n


class RunRecords:
    """State's run counting: `_db` is State's."""

    _db: sqlite3.Connection
    _run: RunCounts | None = None

    def count_run(self, run: RunCounts) -> None:
        """Keep `run` true from now on, starting from what the database holds for it."""
        self._run = run
        self.recount_run()

    def recount_run(self) -> None:
        """Count the run again from the records (another process changed them: retry)."""
        if self._run is not None:
            _, self._run.done, self._run.failed = self.totals_since(self._run.since)

    def totals_since(self, since: float | None) -> tuple[Totals, int, int]:
        """The totals, and how many of the done and the failed were recorded at or after
        `since`: one read, so the two never disagree."""
        row = self._db.execute(
            "SELECT coalesce(sum(status = 'done'), 0), coalesce(sum(status = 'failed'), 0),"
            " coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0),"
            " coalesce(sum(status = 'done' AND updated >= ?1), 0),"
            " coalesce(sum(status = 'failed' AND updated >= ?1), 0) FROM sources",
            (math.inf if since is None else since,),
        ).fetchone()
        done, failed, bytes_in, bytes_out, done_since, failed_since = (int(v) for v in row)
        return Totals(done, failed, bytes_in, bytes_out), done_since, failed_since

    def _unrun(self, path: str) -> None:
        """The record of `path` is about to be replaced or deleted: out of the run's counts."""
        if self._run is None:
            return
        query = "SELECT status, updated FROM sources WHERE path = ?"
        if (row := self._db.execute(query, (path,)).fetchone()) is not None:
            self._run.add(str(row[0]), float(row[1]), -1)

    def _ran(self, status: str, updated: float) -> None:
        if self._run is not None:
            self._run.add(status, updated, 1)
