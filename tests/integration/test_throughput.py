"""What keeps the daemon fast, as behaviour: batched commits, all of them still recorded."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests import images
from thumbd.config import load_config
from thumbd.service.daemon import Daemon
from thumbd.store.state import State


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "thumbd.toml"
    config.write_text("[resize]\nworkers = 2\n[watch]\nsettle_seconds = 0.05\n")
    return config


def test_records_of_a_burst_share_commits_and_none_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spy, not a fake: every commit still happens. One commit per file would cost the main
    # thread more than the records themselves while files keep coming.
    commits: list[int] = []
    real_commit = State.commit

    def counting_commit(self: State) -> None:
        commits.append(1)
        real_commit(self)

    monkeypatch.setattr(State, "commit", counting_commit)
    # Daemon.run() names the thread it runs on "main": give this one its name back afterwards.
    monkeypatch.setattr(threading.current_thread(), "name", threading.current_thread().name)
    (tmp_path / "incoming").mkdir()
    for i in range(100):
        images.make_jpeg(tmp_path / "incoming" / f"b{i:02d}.jpg", (96, 72), comment=b"%d" % i)
    assert Daemon(load_config(_config(tmp_path)), once=True).run() == 0

    state = State(tmp_path / ".thumbd" / "thumbd.db", readonly=True)
    try:
        assert state.totals().done == 100
    finally:
        state.close()
    # One commit per file would be 100 or more. How far below depends on the machine's load
    # (an idle pool commits at once): 7 on a quiet machine, 62 seen under heavy load.
    assert len(commits) < 90, f"{len(commits)} commits for 100 files"
