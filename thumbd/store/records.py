"""The values the state hands out: a source's record, a URL's outcome, totals; and how they are
read from rows (store.state runs the queries)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from thumbd.render.spec import Signature

DONE = "done"
FAILED = "failed"


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


def url_record(row: tuple[object, ...]) -> UrlRecord:
    manifest, url, status, reason, file, size = row
    return UrlRecord(
        manifest=str(manifest),
        url=str(url),
        status=str(status),
        reason=None if reason is None else str(reason),
        file=None if file is None else str(file),
        bytes=int(size),  # type: ignore[call-overload]
    )


def selected(rows: list[str], paths: list[str]) -> list[str]:
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


def record(row: tuple[object, ...]) -> Record:
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
