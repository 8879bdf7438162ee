"""The `urls` table: the outcome of each URL of each manifest (downloads/), and the totals per
manifest `thumbd status` shows. A part of store.state.State, on its connection."""

from __future__ import annotations

import sqlite3
import time

from thumbd.store.records import DONE, FAILED, ManifestTotals, UrlRecord, url_record

_URL_SELECT = "SELECT manifest, url, status, reason, file, bytes FROM urls"


class UrlRecords:
    """State's URL records: `_db` and `_has_urls` are State's."""

    _db: sqlite3.Connection
    _has_urls: bool

    def url_records(self, manifest: str) -> dict[str, UrlRecord]:
        rows = self._db.execute(_URL_SELECT + " WHERE manifest = ?", (manifest,))
        return {r.url: r for r in map(url_record, rows)}

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
        return [url_record(r) for r in rows]

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
