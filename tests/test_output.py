"""output.Writer: atomic writes into outgoing/, never outside it, nothing left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from thumbd.output import TMP_DIR, UnsafePath, Writer


@pytest.fixture
def writer(tmp_path: Path) -> Writer:
    w = Writer(tmp_path / "outgoing")
    w.prepare()
    return w


def leftovers(w: Writer) -> list[str]:
    return os.listdir(w.tmp)


def test_a_write_lands_whole_with_the_umask_mode_and_leaves_no_temporary(writer: Writer) -> None:
    old = os.umask(0o027)
    try:
        assert writer.write("a/b/x_200.jpg", b"x" * 70_000) == 70_000
    finally:
        os.umask(old)
    final = writer.root / "a" / "b" / "x_200.jpg"
    assert final.read_bytes() == b"x" * 70_000
    # The mode a plain `cp` would give under the umask the daemon started with (0o022 here).
    assert stat.S_IMODE(final.stat().st_mode) == 0o666 & ~old
    assert leftovers(writer) == []


def test_a_second_write_replaces_the_first_in_one_rename(writer: Writer) -> None:
    writer.write("x_64.jpg", b"old")
    before = (writer.root / "x_64.jpg").stat().st_ino
    writer.write("x_64.jpg", b"new")
    assert (writer.root / "x_64.jpg").read_bytes() == b"new"
    assert (writer.root / "x_64.jpg").stat().st_ino != before  # a new file, renamed over
    assert leftovers(writer) == []


def test_a_failed_rename_leaves_no_temporary_file(writer: Writer) -> None:
    (writer.root / "taken_200.jpg").mkdir()  # a folder where the thumbnail should go
    with pytest.raises(OSError):
        writer.write("taken_200.jpg", b"data")
    assert leftovers(writer) == []


def test_a_symlinked_folder_cannot_lead_writes_outside(tmp_path: Path, writer: Writer) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (writer.root / "link").symlink_to(outside)
    with pytest.raises(UnsafePath, match="leads outside"):
        writer.write("link/x_200.jpg", b"data")
    assert list(outside.iterdir()) == []
    assert leftovers(writer) == []


def test_start_up_clears_what_a_killed_daemon_left(writer: Writer) -> None:
    (writer.tmp / "x_200.jpg.7.tmp").write_bytes(b"half")
    again = Writer(writer.root)
    again.prepare()
    assert leftovers(again) == []
    again.write("x_200.jpg", b"whole")  # its own temporary names start over: no clash
    assert (again.root / "x_200.jpg").read_bytes() == b"whole"
    assert TMP_DIR in os.listdir(again.root)
