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
from dataclasses import dataclass
from pathlib import Path

from thumbd.render.spec import Signature
from thumbd.store.database import (
    SCHEMA,
    StateError,
    damaged,
    file_id,
    is_damage,
    open_readonly,
)

DONE = "done"
FAILED = "failed"
MANIFEST = "manifest"  # a URL manifest whose every URL has an outcome (not counted as a source)
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


@dataclass(frozen=True, slots=True)
class UrlRecord:
    """The outcome of one URL of one manifest (paths relative to incoming/)."""

    manifest: str
    url: str
    status: str
    reason: str | None
    file: str | None
    bytes: int


@dataclass(frozen=True, slots=True)
class ManifestTotals:
    manifest: str
    done: int
    failed: int
    bytes_downloaded: int
    bytes_out: int  # thumbnails written for its downloaded files


class State:
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
                self._db.executescript(SCHEMA)
            self._db.execute("SELECT count(*) FROM sources").fetchone()
            self._has_urls = self._table_exists("urls")
        except sqlite3.DatabaseError as e:
            if is_damage(e):
                raise damaged(db, e) from e
            raise StateError(f"{db}: {e}") from e
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
        return _record(row) if row else None

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
        self, path: str, sig: Signature, outputs: list[str], bytes_in: int, bytes_out: int
    ) -> None:
        self._put(path, sig, DONE, None, outputs, bytes_in, bytes_out)

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
        and leave them for a running daemon in `retries`. Returns what was cleared. A manifest
        with failed URLs counts as failed: its URL failures and its own record go, so that it
        is read again and only those URLs are fetched again."""
        with self.transaction():
            failed = self._failed_paths()
            if paths is not None:
                failed = _selected(failed, paths)
            for path in failed:
                self.forget_failed_urls(path)
                self._db.execute("DELETE FROM sources WHERE path = ?", (path,))
                self._db.execute("INSERT OR IGNORE INTO retries (path) VALUES (?)", (path,))
        return failed

    def mark_for_redo(self, paths: list[str] | None) -> list[str]:
        """Make the records of `paths` (each a file or a folder), or of all with None, match no
        file, so that their sources are rendered again with the settings of the moment, and
        leave them for a running daemon in `retries`. Returns what was marked. The records
        stay: their outputs are what the new render replaces, and removes where the settings no
        longer make them."""
        with self.transaction():
            rows = [str(r[0]) for r in self._db.execute("SELECT path FROM sources ORDER BY 1")]
            if paths is not None:
                rows = _selected(rows, paths)
            self._db.executemany(
                "UPDATE sources SET mtime_ns = ? WHERE path = ?", [(REDO, r) for r in rows]
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO retries (path) VALUES (?)", [(r,) for r in rows]
            )
        return rows

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
        return [_record(r) for r in rows]

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

    # -- URL manifests ---------------------------------------------------------------------

    def record_manifest(self, path: str, sig: Signature) -> None:
        """Every URL `path` lists has an outcome: scans need not look at it again."""
        self._put(path, sig, MANIFEST, None, [], 0, 0)

    def url_records(self, manifest: str) -> dict[str, UrlRecord]:
        rows = self._db.execute(_URL_SELECT + " WHERE manifest = ?", (manifest,))
        return {r.url: r for r in map(_url_record, rows)}

    def record_url_done(self, manifest: str, url: str, file: str, size: int) -> None:
        self._put_url(manifest, url, DONE, None, file, size)

    def record_url_failed(self, manifest: str, url: str, reason: str) -> None:
        self._put_url(manifest, url, FAILED, reason, None, 0)

    def _put_url(
        self, manifest: str, url: str, status: str, reason: str | None, file: str | None, n: int
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO urls (manifest, url, status, reason, file, bytes, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (manifest, url, status, reason, file, n, time.time()),
        )

    def forget_failed_urls(self, manifest: str, keep: set[str] | None = None) -> None:
        """Forget failures of URLs no longer listed (all of them if `keep` is None), so that
        listing a URL again tries it again."""
        rows = self._db.execute(
            "SELECT url FROM urls WHERE manifest = ? AND status = ?", (manifest, FAILED)
        ).fetchall()
        gone = [(manifest, url) for (url,) in rows if keep is None or url not in keep]
        self._db.executemany("DELETE FROM urls WHERE manifest = ? AND url = ?", gone)

    def url_failures(self) -> list[UrlRecord]:
        if not self._has_urls:
            return []
        rows = self._db.execute(_URL_SELECT + " WHERE status = ? ORDER BY manifest, url", (FAILED,))
        return [_url_record(r) for r in rows]

    def manifest_totals(self, manifest: str | None = None) -> list[ManifestTotals]:
        """URL outcomes and bytes per manifest: downloaded, and thumbnails of those files."""
        if not self._has_urls:
            return []
        where = "" if manifest is None else " WHERE u.manifest = ?"
        rows = self._db.execute(
            "SELECT u.manifest, coalesce(sum(u.status = 'done'), 0),"
            " coalesce(sum(u.status = 'failed'), 0), coalesce(sum(u.bytes), 0),"
            " coalesce(sum(s.bytes_out), 0)"
            " FROM urls u LEFT JOIN sources s ON s.path = u.file AND s.status = 'done'"
            f"{where} GROUP BY u.manifest ORDER BY u.manifest",
            () if manifest is None else (manifest,),
        )
        return [ManifestTotals(str(m), int(d), int(f), int(b), int(o)) for m, d, f, b, o in rows]


_URL_SELECT = "SELECT manifest, url, status, reason, file, bytes FROM urls"


def _url_record(row: tuple[object, ...]) -> UrlRecord:
    manifest, url, status, reason, file, size = row
    return UrlRecord(
        manifest=str(manifest),
        url=str(url),
        status=str(status),
        reason=None if reason is None else str(reason),
        file=None if file is None else str(file),
        bytes=int(size),  # type: ignore[call-overload]
    )


def _selected(rows: list[str], paths: list[str]) -> list[str]:
    """The `rows` equal to or under one of `paths` (files or folders): a set lookup of each row
    and its folders, not a pass over `paths` per row (recovery.after_reboot passes thousands)."""
    wanted = {p.rstrip("/") for p in paths}
    if wanted & {"", "."}:
        return rows

    def hit(row: str) -> bool:
        while row:
            if row in wanted:
                return True
            row = row.rpartition("/")[0]
        return False

    return [r for r in rows if hit(r)]


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
