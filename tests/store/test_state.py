"""state.State: failure records, `thumbd retry` requests and a state being created."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from thumbd.store.state import State


def test_clear_failed_takes_files_and_folders_and_leaves_done_alone(tmp_path: Path) -> None:
    state = State(tmp_path / "t.db")
    try:
        for path in ("a/x.jpg", "a/b/y.jpg", "ab/z.jpg", "c.jpg"):
            state.record_failed(path, (1, 2, 3), "bad")
        state.record_done("a/ok.jpg", (1, 2, 3), ["a/ok_200.jpg"], 1, 1)
        assert state.clear_failed(["a"]) == ["a/b/y.jpg", "a/x.jpg"]  # not ab/z.jpg
        assert state.clear_failed(["c.jpg"]) == ["c.jpg"]
        assert state.get("a/ok.jpg") is not None and state.get("a/x.jpg") is None
        assert state.take_retries() == ["a/b/y.jpg", "a/x.jpg", "c.jpg"]
        assert state.take_retries() == []
        assert state.clear_failed(None) == ["ab/z.jpg"]
    finally:
        state.close()


def test_a_change_by_another_connection_is_noticed_once(tmp_path: Path) -> None:
    daemon = State(tmp_path / "t.db")
    try:
        assert not daemon.changed_elsewhere()
        daemon.record_failed("x.jpg", (1, 2, 3), "bad")  # its own commits do not count
        assert not daemon.changed_elsewhere()
        command = State(tmp_path / "t.db")
        command.clear_failed(None)
        command.close()
        assert daemon.changed_elsewhere()
        assert not daemon.changed_elsewhere()
        assert daemon.take_retries() == ["x.jpg"]
    finally:
        daemon.close()


def test_a_reader_sees_a_database_without_tables_yet_as_empty(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "t.db").close()  # created, no schema yet
    state = State(tmp_path / "t.db", readonly=True)
    try:
        assert state.totals().done == 0 and state.signatures() == {}
    finally:
        state.close()
