"""SQLite state: one row per source, keyed by its path relative to incoming/; the outcome of
each URL of each manifest; `thumbd retry`'s hand-over to a running daemon. The file itself (its
schema, opening it, damage) is store/database.py.

WAL journal with synchronous=NORMAL: a commit is a write into the WAL, not an fsync, and survives
any crash of the process (kill -9, OOM); after a power loss the last commits may roll back (and
thumbnails, never fsynced, may be lost while their rows stay: recovery.after_reboot renders
those again; docs/architecture.md, *Durability*). The database stays consistent either way.

A source counts as done or failed only for the exact (size, mtime_ns, inode) it was rendered
from; a changed source no longer matches and is rendered again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from thumbd.render.spec import Signature
from thumbd.store.database import (
    SCHEMA,
    StateError,
    check_version,
    damaged,
    file_id,
    is_damage,
    migrate,
    open_readonly,
)
from thumbd.store.places import Places
from thumbd.store.records import (
    DONE,
    FAILED,
    ManifestTotals,
    Record,
    Totals,
    UrlRecord,
    record,
    selected,
)
from thumbd.store.runs import RunRecords
from thumbd.store.urls import UrlRecords

MANIFEST = "manifest"  # a URL manifest whose every URL has an outcome (not counted as a source)
SETTINGS_KEY = "settings"  # meta: the fingerprint of the settings the daemon renders with
REDO = -1  # the mtime_ns of a record `thumbd redo` marked: no file has it, so it is rendered again

__all__ = [
    "DONE",
    "FAILED",
    "MANIFEST",
    "REDO",
    "ManifestTotals",
    "Record",
    "State",
    "StateError",
    "Totals",
    "UrlRecord",
    "damaged",
    "is_damage",
]


class State(UrlRecords, RunRecords):
    """The daemon's record of every source. Owned by one thread; `status` opens its own."""

    def __init__(self, db: Path, *, readonly: bool = False) -> None:
        self.path = db
        try:
            if readonly:
                self._db = open_readonly(db)
                if not self._table_exists("sources"):
                    # A daemon is creating it this very moment: read it as the empty state.
                    self._db.close()
                    self._db = sqlite3.connect(":memory:", isolation_level=None)
                    self._db.executescript(SCHEMA)
            else:
                db.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(db, timeout=10, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                check_version(self._db, db)  # before anything is written to it
                self._db.executescript(SCHEMA)
                migrate(self._db, db)
            check_version(self._db, db)
            self._db.execute("SELECT count(*) FROM sources").fetchone()
            self._has_urls = self._table_exists("urls")
            columns = self._db.execute("PRAGMA table_info(sources)").fetchall()
            self._has_settings = any(c[1] == "settings" for c in columns)
        except sqlite3.DatabaseError as e:
            if is_damage(e):
                raise damaged(db, e) from e
            raise StateError(f"{db}: {e}") from e
        self.places = Places(
            self._db, self._unrun
        )  # moves and reuse: where a source's thumbnails go
        self._in_tx = False
        self._tx_since = 0.0
        self._data_version = self._version()
        self._file_id = file_id(db)

    def is_open_at(self, db: Path) -> bool:
        """False once `db` is not the file this connection opened (removed, or replaced)."""
        return file_id(db) == self._file_id

    def _table_exists(self, name: str) -> bool:
        # A read-only reader of a database written by an older thumbd has no urls table.
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def close(self) -> None:
        self._db.close()

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
        self.begin()
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self._in_tx = False
            raise
        else:
            self.commit()

    def begin(self) -> None:
        """Open a transaction that lasts until commit(), unless one is open already: a batch.
        Closing the database without commit() rolls it back."""
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True
            self._tx_since = time.monotonic()

    def commit(self) -> None:
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False

    def open_for(self) -> float | None:
        """Seconds the current transaction has been open; None when there is none."""
        return time.monotonic() - self._tx_since if self._in_tx else None

    def get(self, path: str) -> Record | None:
        row = self._db.execute(
            "SELECT path, size, mtime_ns, inode, status, reason, outputs, bytes_in, bytes_out"
            " FROM sources WHERE path = ?",
            (path,),
        ).fetchone()
        return record(row) if row else None

    def outputs_near(self, key: str) -> dict[str, tuple[str, ...]]:
        """path -> outputs of every row whose path is `key` or `key.*` in the same folder: the
        rows that can list an output name made from `key` (see thumbd.names). Two ranges of the
        primary key: as cheap as a lookup, however large the folder, unless it holds many paths
        that start with `key.` (a folder `x.d/` of its own is skipped, not parsed)."""
        rows = self._db.execute(
            "SELECT path, outputs FROM sources WHERE path = ?1"
            " OR (path >= ?1 || '.' AND path < ?1 || '/' AND instr(substr(path, ?2), '/') = 0)",
            (key, len(key) + 2),
        )
        return {str(p): tuple(json.loads(o)) for p, o in rows}

    def paths_under(self, folder: str) -> list[str]:
        """Every recorded path below `folder` (relative to incoming/): a range of the primary
        key, from `folder/` up to `folder0` ("0" follows "/")."""
        rows = self._db.execute(
            "SELECT path FROM sources WHERE path > ?1 || '/' AND path < ?1 || '0' ORDER BY path",
            (folder,),
        )
        return [str(r[0]) for r in rows]

    def attempts(self, path: str) -> int:
        row = self._db.execute("SELECT attempts FROM sources WHERE path = ?", (path,)).fetchone()
        return int(row[0]) if row else 0

    def record_done(
        self,
        path: str,
        sig: Signature,
        outputs: list[str],
        bytes_in: int,
        bytes_out: int,
        settings: str | None = None,
        content_id: str | None = None,
        digest: str | None = None,
    ) -> None:
        """`path` at `sig` is done: `outputs` made with the settings fingerprinted `settings`
        (render/fingerprint); `content_id` pairs a Live Photo's halves (render/apple);
        `digest` is the content's (render/digest), for copies to find it."""
        self._put(path, sig, DONE, None, outputs, bytes_in, bytes_out, settings, content_id)
        if digest is not None:
            self.places.set_digest(path, digest)

    def record_failed(self, path: str, sig: Signature, reason: str, bytes_in: int = 0) -> None:
        """The source at `sig` failed. Thumbnails an earlier version of it left stay listed as
        its own: a deletion (on_delete) or a later render still finds them, and a same-stem
        sibling does not take their names."""
        earlier = self.get(path)
        outputs = list(earlier.outputs) if earlier is not None else []
        self._put(path, sig, FAILED, reason, outputs, bytes_in, 0)

    def _put(
        self,
        path: str,
        sig: Signature,
        status: str,
        reason: str | None,
        outputs: list[str],
        bytes_in: int,
        bytes_out: int,
        settings: str | None = None,
        content_id: str | None = None,
    ) -> None:
        self._unrun(path)
        now = time.time()
        self._db.execute(
            "INSERT OR REPLACE INTO sources (path, size, mtime_ns, inode, status, reason, outputs,"
            " bytes_in, bytes_out, updated, settings, content_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                path,
                *sig,
                status,
                reason,
                json.dumps(outputs),
                bytes_in,
                bytes_out,
                now,
                settings,
                content_id,
            ),
        )
        self._ran(status, now)

    def forget(self, path: str) -> Record | None:
        record = self.get(path)
        if record is not None:
            self._unrun(path)
            self._db.execute("DELETE FROM sources WHERE path = ?", (path,))
        return record

    def clear_failed(self, paths: list[str] | None) -> list[str]:
        """Forget the failure records of `paths` (each a file or a folder), or of all with None,
        and leave them for a running daemon in `retries`. Returns what was cleared. A manifest
        with failed URLs counts as failed: its URL failures and its own record go, so that it
        is read again and only those URLs are fetched again."""
        with self.transaction():
            failed = self._failed_paths()
            if paths is not None:
                failed = selected(failed, paths)
            for path in failed:
                self.forget_failed_urls(path)
                self._db.execute("DELETE FROM sources WHERE path = ?", (path,))
                self._db.execute("INSERT OR IGNORE INTO retries (path) VALUES (?)", (path,))
        return failed

    def mark_for_redo(self, paths: list[str] | None, *, exact: bool = False) -> list[str]:
        """Make the records of `paths` (each a file or a folder), or of all with None, match no
        file, so that their sources are rendered again with the settings of the moment, and
        leave them for a running daemon in `retries`. Returns what was marked. The records
        stay: their outputs are what the new render replaces, and removes where the settings no
        longer make them."""
        with self.transaction():
            rows = [str(r[0]) for r in self._db.execute("SELECT path FROM sources ORDER BY 1")]
            if paths is not None:
                rows = sorted(set(rows) & set(paths)) if exact else selected(rows, paths)
            self._db.executemany(
                "UPDATE sources SET mtime_ns = ? WHERE path = ?", [(REDO, r) for r in rows]
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO retries (path) VALUES (?)", [(r,) for r in rows]
            )
        return rows

    def mark_stale(self, settings: str) -> list[str]:
        """mark_for_redo for the done sources made with other settings than `settings`."""
        return self.mark_for_redo(self._stale_paths(settings), exact=True)

    def stale(self, settings: str) -> int | None:
        """How many done sources have thumbnails made with other settings than `settings`;
        None for a database from before fingerprints (a daemon has not opened it since)."""
        return len(self._stale_paths(settings)) if self._has_settings else None

    def adopt_settings(self, settings: str) -> None:
        """A daemon renders with `settings` (kept in meta for `thumbd redo --stale`). Records
        from before fingerprints were kept count as made with them (those of the first start
        after the upgrade): an upgrade makes nothing stale."""
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (SETTINGS_KEY, settings)
            )
            self._db.execute(
                "UPDATE sources SET settings = ? WHERE settings IS NULL AND status = ?",
                (settings, DONE),
            )

    def content_id(self, path: str) -> str | None:
        row = self._db.execute("SELECT content_id FROM sources WHERE path = ?", (path,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def with_content_id(self, content_id: str) -> list[str]:
        """The sources recorded with `content_id` (a Live Photo's still and motion)."""
        rows = self._db.execute("SELECT path FROM sources WHERE content_id = ?", (content_id,))
        return sorted(str(r[0]) for r in rows)

    def _stale_paths(self, settings: str) -> list[str]:
        rows = self._db.execute(
            "SELECT path FROM sources WHERE status = ? AND settings != ? ORDER BY 1",
            (DONE, settings),
        )
        return [str(r[0]) for r in rows]

    def done_since(self, since: float) -> list[tuple[str, tuple[str, ...]]]:
        """(path, outputs) of the sources recorded done at or after `since` (time.time())."""
        rows = self._db.execute(
            "SELECT path, outputs FROM sources WHERE status = ? AND updated >= ?", (DONE, since)
        )
        return [(str(path), tuple(json.loads(outputs))) for path, outputs in rows]

    def last_update(self) -> float | None:
        row = self._db.execute("SELECT max(updated) FROM sources").fetchone()
        return None if row[0] is None else float(row[0])

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _failed_paths(self) -> list[str]:
        query = "SELECT path FROM sources WHERE status = ?"
        if self._has_urls:
            query += " UNION SELECT manifest FROM urls WHERE status = ?"
        rows = self._db.execute(query + " ORDER BY 1", (FAILED, FAILED)[: query.count("?")])
        return [str(r[0]) for r in rows]

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

    def signatures_after(self, path: str, limit: int) -> list[tuple[str, Signature]]:
        """Up to `limit` recorded paths after `path`, in path order, with their signatures:
        a page of the primary key, so a scan can read every row without holding them all."""
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, inode FROM sources WHERE path > ? ORDER BY path LIMIT ?",
            (path, limit),
        )
        return [(p, (s, m, i)) for p, s, m, i in rows]

    def failures(self) -> list[Record]:
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, inode, status, reason, outputs, bytes_in, bytes_out"
            " FROM sources WHERE status = ? ORDER BY path",
            (FAILED,),
        )
        return [record(r) for r in rows]

    def recent_failures(self, limit: int) -> list[tuple[str, str | None, str, float]]:
        """The `limit` latest failures, newest first, sources' and URLs' alike, as (source,
        url or None, reason, when recorded): what the status page lists."""
        query = "SELECT path, NULL, reason, updated FROM sources WHERE status = ?"
        params: tuple[object, ...] = (FAILED,)
        if self._has_urls:
            query += " UNION ALL SELECT manifest, url, reason, updated FROM urls WHERE status = ?"
            params += (FAILED,)
        rows = self._db.execute(f"{query} ORDER BY 4 DESC LIMIT ?", (*params, limit))
        return [(str(p), u if u is None else str(u), str(r or ""), float(t)) for p, u, r, t in rows]

    def totals(self) -> Totals:
        row = self._db.execute(
            "SELECT coalesce(sum(status = 'done'), 0), coalesce(sum(status = 'failed'), 0),"
            " coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0) FROM sources"
        ).fetchone()
        return Totals(*(int(v) for v in row))

    def record_manifest(self, path: str, sig: Signature) -> None:
        """Every URL `path` lists has an outcome: scans need not look at it again."""
        self._put(path, sig, MANIFEST, None, [], 0, 0)
