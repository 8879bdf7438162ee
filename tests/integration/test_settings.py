"""The settings fingerprint against the real daemon: `status` counts the sources whose
thumbnails older settings made, `thumbd redo --stale` renders only those, and the state
database's schema version upgrades an older database and refuses a newer one."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

from tests.conftest import Daemon, made, thumbd, wait_until
from tests.integration.test_core import jpeg_bytes


def _put(daemon: Daemon, rel: str, seed: int) -> None:
    final = daemon.incoming / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    tmp.write_bytes(jpeg_bytes((320, 240), seed))
    os.replace(tmp, final)


def _db(daemon: Daemon) -> Path:
    return daemon.tmp / ".thumbd" / "thumbd.db"


def _inodes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_ino for p in made(root)}


def test_redo_stale_renders_only_what_older_settings_made(daemon: Daemon) -> None:
    daemon.write_config({"thumbnails": {"widths": [200, 64]}})
    old = ["a.jpg", "b/c.jpg", "b/d.jpg"]
    for i, rel in enumerate(old):
        _put(daemon, rel, i)
    daemon.start()
    wait_until(lambda: all(daemon.done(r, (200, 64)) for r in old), 30, "the first widths")
    assert daemon.recorded(done=3)["stale"] == 0

    # The same settings spelt another way are not a change.
    daemon.write_config({"thumbnails": {"widths": [64, 200], "gallery": True}})
    assert daemon.status()["stale"] == 0

    daemon.write_config({"thumbnails": {"widths": [120]}})
    assert daemon.status()["stale"] == 3  # the configuration's settings, daemon or not
    r = thumbd("redo", "-c", str(daemon.config), "--stale")
    # The daemon still renders with [200, 64]: what it made now would still be stale.
    assert r.returncode == 1 and "reload it first" in r.stderr and "nothing marked" in r.stderr
    assert r.stdout == ""
    daemon.send(signal.SIGHUP)
    wait_until(lambda: "[thumbnails] widths" in daemon.read_log(), 30, "the reload")
    _put(daemon, "e.jpg", 7)  # made with the new settings: not stale
    wait_until(lambda: daemon.done("e.jpg", (120,)), 30, "the new file")
    daemon.recorded(done=4)
    text = thumbd("status", "-c", str(daemon.config))
    assert "stale:   3 (thumbnails made with older settings" in text.stdout, text.stdout
    fresh = daemon.thumbs("e.jpg", (120,))[0].stat().st_ino

    r = thumbd("redo", "-c", str(daemon.config), "--stale", "-v")
    assert r.returncode == 0, r.stderr
    assert "reload it first" not in r.stderr
    assert r.stdout.splitlines() == [
        "redo a.jpg",
        "redo b/c.jpg",
        "redo b/d.jpg",
        "redo: 3 files will be rendered again",
    ]
    wait_until(lambda: all(daemon.done(r, (120,)) for r in old), 30, "the stale ones again")
    wait_until(lambda: daemon.status()["stale"] == 0, 30, "nothing stale")
    assert sorted(_inodes(daemon.outgoing)) == [
        "a_120.jpg",
        "b/c_120.jpg",
        "b/d_120.jpg",
        "e_120.jpg",
    ]
    assert daemon.thumbs("e.jpg", (120,))[0].stat().st_ino == fresh  # not rendered again
    r = thumbd("redo", "-c", str(daemon.config), "--stale")
    assert r.stdout == "redo: 0 files will be rendered again\n", r.stdout
    assert daemon.stop() == 0


def test_redo_needs_exactly_one_of_paths_all_and_stale(daemon: Daemon) -> None:
    for args in ([], ["--all", "--stale"], ["x.jpg", "--stale"]):
        r = thumbd("redo", "-c", str(daemon.config), *args)
        assert r.returncode == 2 and "PATH... or --all or --stale (one of them)" in r.stderr
    r = thumbd("retry", "-c", str(daemon.config), "--stale")
    assert r.returncode == 2  # retry has no --stale


def test_an_older_database_is_upgraded_without_rendering_and_a_newer_one_refused(
    daemon: Daemon,
) -> None:
    for i in range(3):
        _put(daemon, f"p{i}.jpg", i)
    assert thumbd("once", "-c", str(daemon.config)).returncode == 0
    before = _inodes(daemon.outgoing)
    assert len(before) == 9

    # What a thumbd from before schema versions left: no `settings` column, user_version 0.
    conn = sqlite3.connect(_db(daemon))
    conn.execute("DROP INDEX sources_content")
    conn.execute("DROP INDEX sources_size")
    conn.execute("ALTER TABLE sources DROP COLUMN settings")
    conn.execute("ALTER TABLE sources DROP COLUMN content_id")
    conn.execute("ALTER TABLE sources DROP COLUMN hash")
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    assert daemon.status()["stale"] is None  # status reads it as it is, and says it cannot tell
    r = thumbd("once", "-c", str(daemon.config))
    assert r.returncode == 0, r.stderr
    assert _inodes(daemon.outgoing) == before  # nothing rendered
    conn = sqlite3.connect(_db(daemon))
    assert conn.execute("PRAGMA user_version").fetchone() == (4,)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(sources)")]
    assert columns[-3:] == ["settings", "content_id", "hash"]
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(sources)")}
    assert {"sources_content", "sources_size"} <= indexes
    settings = {row[0] for row in conn.execute("SELECT settings FROM sources")}
    assert len(settings) == 1 and None not in settings  # adopted: the upgrade made none stale
    conn.close()
    status = daemon.status()
    assert status["done"] == 3 and status["stale"] == 0

    conn = sqlite3.connect(_db(daemon))
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    for command in ("once", "status"):
        r = thumbd(command, "-c", str(daemon.config))
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert f"state database {_db(daemon)} was written by a newer thumbd (schema 5" in r.stderr
        assert "Traceback" not in r.stderr
    assert _inodes(daemon.outgoing) == before
    conn = sqlite3.connect(_db(daemon))
    assert conn.execute("PRAGMA user_version").fetchone() == (5,)  # left as it was
    conn.close()
