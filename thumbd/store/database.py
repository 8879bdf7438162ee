"""The state database file: its schema, how it is opened, and what counts as damage.

The daemon opens it read-write (store.state.State); `thumbd status` opens it read-only, as any
user, also while no daemon runs (`open_readonly`). SQLite's own result codes say when the file
is damaged or not a database at all (`is_damage`): recovery.open_state then moves it aside and
starts afresh; the commands say so with `damaged`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

SCHEMA = """
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
    updated   REAL NOT NULL,
    settings  TEXT,  -- render/fingerprint of the settings a done source was rendered with
    content_id TEXT,  -- Apple's content identifier (render/apple.py): a Live Photo's halves
    hash      TEXT  -- render/digest of the bytes a done source was rendered from (copies)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sources_status ON sources(status);
CREATE TABLE IF NOT EXISTS urls (
    manifest  TEXT NOT NULL,
    url       TEXT NOT NULL,
    status    TEXT NOT NULL,
    reason    TEXT,
    file      TEXT,
    bytes     INTEGER NOT NULL DEFAULT 0,
    updated   REAL NOT NULL,
    PRIMARY KEY (manifest, url)
) WITHOUT ROWID;
-- Sources `thumbd retry` cleared: a running daemon takes them from here (see take_retries).
CREATE TABLE IF NOT EXISTS retries (path TEXT PRIMARY KEY) WITHOUT ROWID;
-- Facts about the runs themselves (the boot the last run started in: recovery.after_reboot).
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


# PRAGMA user_version: 0 is thumbd before versions; 2 adds `settings`, 3 `content_id`, 4 `hash`
# and the index by size and inode (a moved source's identity, a copy's candidates). A change of
# tables raises it and adds a step to `migrate`.
SCHEMA_VERSION = 4
# Made once the columns are there (a database being upgraded has no content_id before that).
INDEXES = """
CREATE INDEX IF NOT EXISTS sources_content ON sources(content_id);
CREATE INDEX IF NOT EXISTS sources_size ON sources(size, inode);
"""


class StateError(Exception):
    """The state database cannot be opened or is damaged."""


# SQLite's primary result codes for "this is not (or no longer) a database".
_DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
REBUILT = "the next `thumbd run` or `once` moves it aside and rebuilds it from a scan"


def is_damage(e: sqlite3.DatabaseError) -> bool:
    """SQLite says the file is damaged, or not a database at all."""
    code = getattr(e, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _DAMAGED


def damaged(db: Path, e: sqlite3.DatabaseError) -> StateError:
    """What `thumbd status`, `retry` and `redo` say about a damaged database."""
    return StateError(f"state database {db} is damaged ({e}); {REBUILT}")


def migrate(conn: sqlite3.Connection, db: Path) -> None:
    """Bring a database an older thumbd wrote up to SCHEMA_VERSION, in one transaction;
    refuse one a newer thumbd wrote (its tables may mean what this thumbd cannot know)."""
    version = check_version(conn, db)
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(sources)")}
        if "settings" not in columns:  # 0 -> 2
            conn.execute("ALTER TABLE sources ADD COLUMN settings TEXT")
        if "content_id" not in columns:  # 2 -> 3
            conn.execute("ALTER TABLE sources ADD COLUMN content_id TEXT")
        if "hash" not in columns:  # 3 -> 4
            conn.execute("ALTER TABLE sources ADD COLUMN hash TEXT")
        for statement in INDEXES.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def check_version(conn: sqlite3.Connection, db: Path) -> int:
    """The database's schema version; a StateError for one newer than this thumbd knows."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StateError(
            f"state database {db} was written by a newer thumbd (schema {version}; this one"
            f" knows up to {SCHEMA_VERSION}): run that thumbd, or move the file aside and this"
            " one rebuilds it from a scan"
        )
    return version


def open_readonly(db: Path) -> sqlite3.Connection:
    """A read-only connection, for `thumbd status` run by any user (a monitoring check).

    Reading a WAL database needs its -shm file: a running daemon has one, but a stopped daemon's
    database has none, and a user who may not write to the state folder cannot make it. With no
    -wal file either, nothing is being written: read the database file as it is (immutable)."""
    uri = db.absolute().as_uri()  # percent-encoded: a '?' or '#' in the path stays a path
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if Path(f"{db}-wal").exists() or not os.access(db, os.R_OK):
            raise
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=10)


def file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of `path`, None when there is none: a replaced file has another."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
