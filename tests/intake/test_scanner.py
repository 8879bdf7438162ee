"""Scans: the walk in the state's order, the merge of the two, and what is gone."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from thumbd.intake import scanner
from thumbd.store.state import State

# Names whose order is easy to get wrong: "-" and "." sort before "/", "0" after it; upper case
# before lower; non-ASCII after ASCII, by code point (which is UTF-8 byte order).
TRICKY = [
    "a.jpg",
    "a0.jpg",
    "a-b.jpg",
    "a/x.jpg",
    "a/b/c.jpg",
    "a-b/y.jpg",
    "A/z.jpg",
    "a b/k.jpg",
    "ab/k.jpg",
    "z.jpg",
    "é/q.jpg",
    "日本/x.jpg",
    "a/🙂.jpg",
]


def make_tree(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def sqlite_order(names: list[str]) -> list[str]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (path TEXT PRIMARY KEY) WITHOUT ROWID")
    db.executemany("INSERT INTO t VALUES (?)", [(n,) for n in names])
    return [row[0] for row in db.execute("SELECT path FROM t ORDER BY path")]


def test_the_walk_visits_paths_in_the_order_the_state_keeps_them(tmp_path: Path) -> None:
    make_tree(tmp_path, [*TRICKY, ".hidden/x.jpg", "a/.x.jpg.Ab12Cd", "notes.txt"])
    walked = [rel for rel, _ in scanner.walk_in_order(str(tmp_path))]
    assert walked == sqlite_order(TRICKY)


def test_unrecorded_is_what_has_no_record_for_its_current_content(tmp_path: Path) -> None:
    root = tmp_path / "incoming"
    make_tree(root, TRICKY)
    state = State(tmp_path / "thumbd.db")
    expected = set()
    for i, name in enumerate(sorted(TRICKY)):
        st = os.lstat(root / name)
        sig = (st.st_size, st.st_mtime_ns, st.st_ino)
        if i % 4 == 0:
            expected.add(name)  # never recorded
        elif i % 4 == 1:
            state.record_done(name, (sig[0] + 1, *sig[1:]), [], 0, 0)  # an older version
            expected.add(name)
        elif i % 4 == 2:
            state.record_failed(name, sig, "bad", 0)  # failed for exactly this content
        else:
            state.record_done(name, sig, [], 0, 0)
    for gone in ("0-gone.jpg", "a/0.jpg", "a/zz/gone.jpg", "zz.jpg"):
        state.record_done(gone, (1, 1, 1), [], 0, 0)  # rows for deleted files in between
    state.close()
    for page in (1, 2, 1000):  # pages of the state end anywhere in the walk
        found = list(scanner.unrecorded(str(root), tmp_path / "thumbd.db", page=page))
        assert found == sqlite_order(sorted(expected)), page


def run_scan(root: Path, db: Path) -> tuple[list[str], list[list[str]]]:
    found: list[str] = []
    gone: list[list[str]] = []
    scanner.scan(
        str(root),
        db,
        (),
        lambda rels, final: found.extend(rels),
        threading.Event(),
        gone=gone.append,
    )
    return found, gone


def test_a_scan_reports_recorded_sources_that_no_longer_exist(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "a" / "kept.jpg").write_bytes(b"x")
    (root / "new.jpg").write_bytes(b"y")
    db = tmp_path / "t.db"
    state = State(db)
    st = (root / "a" / "kept.jpg").stat()
    state.record_done("a/kept.jpg", (st.st_size, st.st_mtime_ns, st.st_ino), [], 1, 1)
    state.record_done("a/deleted.jpg", (1, 2, 3), [], 1, 1)
    state.record_failed("gone/too.jpg", (1, 2, 3), "bad")
    state.close()
    found, gone = run_scan(root, db)
    assert found == ["new.jpg"]
    assert gone == [["a/deleted.jpg", "gone/too.jpg"]]


def test_an_empty_folder_with_records_is_not_taken_for_mass_deletion(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()  # as an unmounted share looks
    db = tmp_path / "t.db"
    state = State(db)
    state.record_done("x.jpg", (1, 2, 3), [], 1, 1)
    state.close()
    found, gone = run_scan(root, db)
    assert found == [] and gone == []
