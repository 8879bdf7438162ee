"""output.Writer: atomic writes that never leave outgoing/, whatever the names or symlinks."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from thumbd.output.writer import TMP_DIR, UnsafePath, Writer, plain_parts, thumbnail_name


@pytest.fixture
def writer(tmp_path: Path) -> Writer:
    w = Writer(tmp_path / "out")
    w.prepare()
    return w


@pytest.mark.parametrize(
    "rel", ["x.jpg", "a/b/x.jpg", "a/b.c/x.y.jpeg", "a/.hidden", "a/x.", "noext", "a/..jpg"]
)
def test_thumbnail_names_keep_the_folder_and_the_stem(rel: str) -> None:
    p = PurePosixPath(rel)
    assert thumbnail_name(rel, 200, "jpg") == str(p.with_name(f"{p.stem}_200.jpg"))


@pytest.mark.parametrize(
    "rel", ["", "/etc/x.jpg", "../x.jpg", "a/../../x.jpg", "a/./x.jpg", "a//x.jpg", "..", "a/"]
)
def test_names_that_could_leave_the_root_are_refused(writer: Writer, rel: str) -> None:
    with pytest.raises(UnsafePath):
        plain_parts(rel)
    with pytest.raises(UnsafePath):
        writer.write(rel, b"data")


def test_a_write_lands_whole_and_leaves_no_temporary_file(writer: Writer) -> None:
    assert writer.write("a/b/x_200.jpg", b"thumbnail") == 9
    assert (writer.root / "a" / "b" / "x_200.jpg").read_bytes() == b"thumbnail"
    assert list((writer.root / TMP_DIR).iterdir()) == []


def test_a_symlinked_folder_below_the_root_is_refused_not_followed(
    writer: Writer, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (writer.root / "a").mkdir()
    os.symlink(elsewhere, writer.root / "a" / "b")
    with pytest.raises(UnsafePath, match="symbolic link"):
        writer.write("a/b/x_200.jpg", b"data")
    assert list(elsewhere.iterdir()) == []
    assert list((writer.root / TMP_DIR).iterdir()) == []


def test_a_symlink_in_place_of_a_thumbnail_is_replaced_not_written_through(
    writer: Writer, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, writer.root / "x_200.jpg")
    writer.write("x_200.jpg", b"data")
    assert victim.read_text() == "precious"
    assert not (writer.root / "x_200.jpg").is_symlink()
    writer.remove("x_200.jpg")
    assert victim.read_text() == "precious"


def test_remove_prunes_folders_it_leaves_empty_and_only_those(writer: Writer) -> None:
    writer.write("a/b/x_200.jpg", b"1")
    writer.write("a/y_200.jpg", b"2")
    writer.remove("a/b/x_200.jpg", prune=True)
    assert not (writer.root / "a" / "b").exists()
    assert (writer.root / "a" / "y_200.jpg").exists()
    writer.remove("a/y_200.jpg", prune=True)
    assert not (writer.root / "a").exists() and writer.root.is_dir()
    writer.remove("a/y_200.jpg", prune=True)  # gone already: nothing to do


def test_prepare_replaces_a_planted_temporary_folder_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "out"
    root.mkdir()
    os.symlink(elsewhere, root / TMP_DIR)
    w = Writer(root)
    w.prepare()
    w.write("x_200.jpg", b"data")
    assert list(elsewhere.iterdir()) == []
    assert (root / TMP_DIR).is_dir() and not (root / TMP_DIR).is_symlink()
