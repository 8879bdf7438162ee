"""SQLite state: one row per source, keyed by its path relative to incoming/.

WAL journal with synchronous=NORMAL: a commit is a write into the WAL, not an fsync, and survives
any crash of the process (kill -9, OOM); after a power loss the last commits may roll back, which
only means those sources are rendered again. The database stays consistent either way.

A source counts as done or failed only for the exact (size, mtime_ns, inode) it was rendered
from; a changed source no longer matches and is rendered again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from thumbd.render import Signature

DONE = "done"
FAILED = "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    path      TEXT PRIMARY KEY,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    inode     INTEGER NOT NULL,
    status    TEXT NOT NULL,
    reason    TEXT,
    outputs   TEXT NOT NULL DEFAULT '[]',
    bytes_in  INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    attempts  INTEGER NOT NULL DEFAULT 0,
    updated   REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sources_status ON sources(status);
-- Sources `thumbd retry` cleared: a running daemon takes them from here (see take_retries).
CREATE TABLE IF NOT EXISTS retries (path TEXT PRIMARY KEY) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Record:
    path: str
    signature: Signature
    status: str
    reason: str | None
    outputs: tuple[str, ...]
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True, slots=True)
class Totals:
    done: int
    failed: int
    bytes_in: int
    bytes_out: int


class StateError(Exception):
    """The state database cannot be opened or is damaged."""


class State:
    """The daemon's record of every source. Owned by one thread; `status` opens its own."""

    def __init__(self, db: Path, *, readonly: bool = False) -> None:
        self.path = db
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
                if not self._has_schema():
                    # A daemon is creating it this very moment: read it as the empty state.
                    self._db.close()
                    self._db = sqlite3.connect(":memory:", isolation_level=None)
                    self._db.executescript(_SCHEMA)
            else:
                db.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(db, timeout=10, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SCHEMA)
            self._db.execute("SELECT count(*) FROM sources").fetchone()
        except sqlite3.DatabaseError as e:
            raise StateError(f"{db}: {e}") from e
        self._in_tx = False
        self._data_version = self._version()

    def close(self) -> None:
        self._db.close()

    def _has_schema(self) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sources'"
        return self._db.execute(query).fetchone() is not None

    def quick_check(self) -> str | None:
        """None when SQLite finds the database sound, else its first complaint."""
        row = self._db.execute("PRAGMA quick_check(1)").fetchone()
        return None if row[0] == "ok" else str(row[0])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several records into one commit (nested calls join the outer one)."""
        if self._in_tx:
            yield
            return
        self._db.execute("BEGIN")
        self._in_tx = True
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._in_tx = False

    def get(self, path: str) -> Record | None:
        row = self._db.execute(
            "SELECT path, size, mtime_ns, inode, status, reason, outputs, bytes_in, bytes_out"
            " FROM sources WHERE path = ?",
            (path,),
        ).fetchone()
        return _record(row) if row else None

    def attempts(self, path: str) -> int:
        row = self._db.execute("SELECT attempts FROM sources WHERE path = ?", (path,)).fetchone()
        return int(row[0]) if row else 0

    def record_done(
        self, path: str, sig: Signature, outputs: list[str], bytes_in: int, bytes_out: int
    ) -> None:
        self._put(path, sig, DONE, None, outputs, bytes_in, bytes_out)

    def record_failed(self, path: str, sig: Signature, reason: str, bytes_in: int = 0) -> None:
        self._put(path, sig, FAILED, reason, [], bytes_in, 0)

    def _put(
        self,
        path: str,
        sig: Signature,
        status: str,
        reason: str | None,
        outputs: list[str],
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sources"
            " (path, size, mtime_ns, inode, status, reason, outputs, bytes_in, bytes_out, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (path, *sig, status, reason, json.dumps(outputs), bytes_in, bytes_out, time.time()),
        )

    def forget(self, path: str) -> Record | None:
        record = self.get(path)
        if record is not None:
            self._db.execute("DELETE FROM sources WHERE path = ?", (path,))
        return record

    def clear_failed(self, paths: list[str] | None) -> list[str]:
        """Forget the failure records of `paths` (each a file or a folder), or of all with None,
        and leave them for a running daemon in `retries`. Returns what was cleared."""
        with self.transaction():
            failed = [
                r[0]
                for r in self._db.execute(
                    "SELECT path FROM sources WHERE status = ? ORDER BY path", (FAILED,)
                )
            ]
            if paths is not None:
                failed = [f for f in failed if any(_under(f, p) for p in paths)]
            for path in failed:
                self._db.execute("DELETE FROM sources WHERE path = ?", (path,))
                self._db.execute("INSERT OR IGNORE INTO retries (path) VALUES (?)", (path,))
        return failed

    def take_retries(self) -> list[str]:
        """The sources `thumbd retry` cleared since the last call."""
        with self.transaction():
            paths = [r[0] for r in self._db.execute("SELECT path FROM retries")]
            self._db.execute("DELETE FROM retries")
        return paths

    def changed_elsewhere(self) -> bool:
        """True once after another connection (`thumbd retry`) committed a change.

        PRAGMA data_version is SQLite's own answer to exactly this question: it changes when
        any other connection, in any process, commits; a cheap read, no polling of files.
        """
        version = self._version()
        changed, self._data_version = version != self._data_version, version
        return changed

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def signatures(self) -> dict[str, tuple[Signature, str]]:
        """Every recorded source with its signature and status, in one query (for scans)."""
        rows = self._db.execute("SELECT path, size, mtime_ns, inode, status FROM sources")
        return {p: ((s, m, i), st) for p, s, m, i, st in rows}

    def failures(self) -> list[Record]:
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, inode, status, reason, outputs, bytes_in, bytes_out"
            " FROM sources WHERE status = ? ORDER BY path",
            (FAILED,),
        )
        return [_record(r) for r in rows]

    def totals(self) -> Totals:
        row = self._db.execute(
            "SELECT coalesce(sum(status = 'done'), 0), coalesce(sum(status = 'failed'), 0),"
            " coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0) FROM sources"
        ).fetchone()
        return Totals(*(int(v) for v in row))


def _under(path: str, prefix: str) -> bool:
    return prefix in ("", ".") or path == prefix or path.startswith(prefix.rstrip("/") + "/")


def _record(row: tuple[object, ...]) -> Record:
    path, size, mtime, inode, status, reason, outputs, bytes_in, bytes_out = row
    return Record(
        path=str(path),
        signature=(int(size), int(mtime), int(inode)),  # type: ignore[call-overload]
        status=str(status),
        reason=None if reason is None else str(reason),
        outputs=tuple(json.loads(str(outputs))),
        bytes_in=int(bytes_in),  # type: ignore[call-overload]
        bytes_out=int(bytes_out),  # type: ignore[call-overload]
    )
