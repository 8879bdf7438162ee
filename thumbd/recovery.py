"""Recovering from a lost or damaged state database, without regenerating what is there.

The state database is a cache of what the filesystem already shows: the sources in incoming/
and the thumbnails in outgoing/. So a missing database, or one SQLite calls damaged, is not a
reason to stop or to start over:

- `open_state` moves a damaged database aside (`thumbd.db.damaged-<time>`, kept for a post
  mortem), says so with a warning, and starts an empty one; a missing one is only worth a
  warning when outgoing/ shows that thumbd ran before;
- `existing_thumbnails` lets the main loop record a source as done, without rendering it, when
  every output it would write (each width and named size, in a format the configuration allows,
  and the index when there is one) is already in outgoing/ and was written after the source
  last changed. The start-up scan then rebuilds the database from the two folders.

"Written after the source last changed" compares a thumbnail's mtime with the source's ctime,
not its mtime: `cp -p`, `rsync -a` and cameras set a source's mtime to the past, but nothing
can set its ctime, which moves on every write, rename or chmod. A source that arrived (or
changed) after its thumbnails were written is therefore rendered again, also when its name
collides with thumbnails left by an earlier, deleted file of the same name.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from pathlib import Path

from thumbd.output import TMP_DIR, index_name, thumbnail_name
from thumbd.render import RenderSpec
from thumbd.state import State, StateError

log = logging.getLogger("thumbd")

# What render() may write for one size: by [thumbnails] format, plus GIF/WebP for animations.
_EXTENSIONS = {"auto": ("jpg", "png"), "jpeg": ("jpg",), "png": ("png",), "webp": ("webp",)}
_EXTENSIONS["avif"] = ("avif",)
_ANIMATED = ("gif", "webp")


# SQLite's primary result codes for "this is not (or no longer) a database".
_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def open_state(db: Path, outgoing: Path) -> State:
    """Open the daemon's state; rebuild it (with a warning) when it is missing or damaged."""
    if not db.exists() and _has_thumbnails(outgoing):
        log.warning(
            "state database %s is missing; rebuilding it from a scan of incoming/ "
            "(thumbnails already in %s count as done)",
            db,
            outgoing,
        )
    try:
        return _checked(db)
    except _Damaged as e:
        aside = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(f"{db}{suffix}")
            if part.exists():
                os.replace(part, f"{aside}{suffix}")
        log.warning(
            "state database %s is damaged (%s); moved it to %s and rebuilding it from a scan "
            "of incoming/ (thumbnails already in %s count as done)",
            db,
            e,
            aside,
            outgoing,
        )
        return _checked(db)


class _Damaged(Exception):
    pass


def _checked(db: Path) -> State:
    try:
        state = State(db)
    except StateError as e:
        if isinstance(e.__cause__, sqlite3.DatabaseError) and _is_damage(e.__cause__):
            raise _Damaged(e.__cause__) from e
        raise
    try:
        problem = state.quick_check()
    except sqlite3.DatabaseError as e:
        state.close()
        if _is_damage(e):
            raise _Damaged(e) from e
        raise StateError(f"{db}: {e}") from None
    if problem is not None:
        state.close()
        raise _Damaged(problem)
    return state


def _is_damage(e: sqlite3.DatabaseError) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _DAMAGED


def _has_thumbnails(outgoing: Path) -> bool:
    try:
        with os.scandir(outgoing) as entries:
            return any(e.name != TMP_DIR for e in entries)
    except OSError:
        return False


def expected_outputs(spec: RenderSpec) -> tuple[list[str], tuple[str, ...], bool]:
    """(labels, possible extensions, index) of what render() makes of every source."""
    labels = [str(w) for w in spec.widths] + [s.name for s in spec.sizes]
    extensions = _EXTENSIONS[spec.format] + (_ANIMATED if spec.animated else ())
    return labels, tuple(dict.fromkeys(extensions)), spec.index


def existing_thumbnails(
    outgoing: Path, rel: str, spec: RenderSpec, source: str
) -> tuple[list[str], int] | None:
    """(names, total bytes) of a complete set of outputs written after `source` last changed,
    or None when any of them is missing or older."""
    try:
        changed = os.lstat(source).st_ctime_ns
    except OSError:
        return None
    labels, extensions, index = expected_outputs(spec)
    wanted = [[thumbnail_name(rel, label, ext) for ext in extensions] for label in labels]
    if index:
        wanted.append([index_name(rel)])
    names: list[str] = []
    total = 0
    for candidates in wanted:
        found = _newest(outgoing, candidates, changed)
        if found is None:
            return None
        names.append(found[1])
        total += found[2]
    return names, total


def _newest(outgoing: Path, candidates: list[str], changed: int) -> tuple[int, str, int] | None:
    """The newest regular file among `candidates` written at or after `changed`, if any."""
    best: tuple[int, str, int] | None = None
    for name in candidates:
        try:
            st = os.lstat(outgoing / name)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mtime_ns >= changed:
            found = (st.st_mtime_ns, name, st.st_size)
            best = found if best is None else max(best, found)
    return best
