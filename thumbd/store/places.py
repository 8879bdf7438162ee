"""Where a source's thumbnails go when it moves, and which recorded source a new file is: the
queries of moves and reuse, on the state's connection (store/state.State.places).

A source is found again by its identity, (size, mtime_ns, inode), which a rename keeps: a row
whose path no longer holds that file and a new path that does are one source moved. A copy is
found by its content: a done row of the same size, the same render settings and the same
digest (render/digest). Both go through the index `sources_size (size, inode)`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from thumbd.render.spec import Signature

REDO = -1  # store.state.REDO: an mtime_ns no file has


@dataclass(frozen=True, slots=True)
class Candidate:
    """A done row a new file may be (moved) or equal (a copy)."""

    path: str
    signature: Signature
    outputs: tuple[str, ...]
    settings: str | None
    digest: str | None
    content_id: str | None = None  # a Live Photo's half: not given to a copy elsewhere


class Places:
    def __init__(
        self, db: sqlite3.Connection, unrun: Callable[[str], None] = lambda path: None
    ) -> None:
        self._db = db
        self._unrun = unrun  # a row is about to go: out of this run's counts (store/runs)

    def move(self, src: str, dest: str, outputs: list[str]) -> None:
        """The source recorded at `src` is at `dest` now, its outputs renamed to `outputs`; a
        row `dest` had is replaced (that source was overwritten by the move)."""
        self._unrun(dest)
        self._db.execute("DELETE FROM sources WHERE path = ?", (dest,))
        self._db.execute(
            "UPDATE sources SET path = ?, outputs = ? WHERE path = ?",
            (dest, json.dumps(outputs), src),
        )

    def move_under(self, src: str, dest: str) -> list[tuple[str, str]]:
        """Every row below the folder `src` moves below `dest` (paths and outputs keep their
        place in it); rows below `dest` before are dropped (a folder is renamed only onto an
        empty one, so those sources are gone). Returns (old, new) of the rows moved."""
        n = len(src)
        under = "path > ?1 || '/' AND path < ?1 || '0'"
        rows = self._db.execute(f"SELECT path, outputs FROM sources WHERE {under}", (src,))
        updates = []
        for path, outputs in rows.fetchall():
            names = [dest + o[n:] if o.startswith(f"{src}/") else o for o in json.loads(outputs)]
            updates.append((dest + str(path)[n:], json.dumps(names), str(path)))
        for (gone,) in self._db.execute(
            f"SELECT path FROM sources WHERE {under}", (dest,)
        ).fetchall():
            self._unrun(str(gone))
        self._db.execute(f"DELETE FROM sources WHERE {under}", (dest,))
        self._db.executemany("UPDATE sources SET path = ?, outputs = ? WHERE path = ?", updates)
        return [(old, new) for new, _, old in updates]

    def outputs_under(self, folder: str) -> set[str]:
        """Every output the rows below `folder` list."""
        rows = self._db.execute(
            "SELECT outputs FROM sources WHERE path > ?1 || '/' AND path < ?1 || '0'", (folder,)
        )
        return {name for (outputs,) in rows for name in json.loads(outputs)}

    def invalidate(self, path: str) -> None:
        """Make `path`'s row match no file (as `redo` does): it is rendered again, and its
        outputs are what the new render replaces."""
        self._db.execute("UPDATE sources SET mtime_ns = ? WHERE path = ?", (REDO, path))

    def set_digest(self, path: str, digest: str) -> None:
        self._db.execute("UPDATE sources SET hash = ? WHERE path = ?", (digest, path))

    def same_identity(self, sig: Signature, path: str) -> list[Candidate]:
        """Done or failed rows other than `path` recorded at exactly `sig`."""
        where = "size = ? AND inode = ? AND mtime_ns = ? AND path != ? AND status != 'manifest'"
        return self._select(where, (sig[0], sig[2], sig[1], path))

    def candidate(self, path: str) -> Candidate | None:
        """The done row of `path` as a candidate (for the window of output/reuse.py)."""
        found = self._select("path = ? AND status = 'done'", (path,))
        return found[0] if found else None

    def same_size(self, size: int, path: str) -> list[Candidate]:
        """Done rows other than `path` of `size` bytes with a digest: a copy's candidates."""
        return self._select(
            "size = ? AND path != ? AND status = 'done' AND hash IS NOT NULL", (size, path)
        )

    def _select(self, where: str, params: tuple[object, ...]) -> list[Candidate]:
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, inode, outputs, settings, hash, content_id FROM sources"
            f" WHERE {where} LIMIT 16",
            params,
        )
        return [
            Candidate(str(p), (int(s), int(m), int(i)), tuple(json.loads(o)), st, h, c)
            for p, s, m, i, o, st, h, c in rows
        ]
