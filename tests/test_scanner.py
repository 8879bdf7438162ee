"""scanner.scan: what needs work, and which recorded sources are gone."""

from __future__ import annotations

import threading
from pathlib import Path

from thumbd.scanner import scan
from thumbd.state import State


def run_scan(root: Path, db: Path) -> tuple[list[str], list[list[str]]]:
    found: list[str] = []
    gone: list[list[str]] = []
    scan(
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
