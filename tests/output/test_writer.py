"""output.Writer: atomic writes that never leave outgoing/, whatever the names or symlinks."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from thumbd.output.writer import (
    TMP_DIR,
    UnsafePath,
    Writer,
    index_name,
    plain_parts,
    thumbnail_name,
)


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


def test_a_name_with_a_one_letter_extension_keeps_its_stem() -> None:
    assert thumbnail_name("a/x.j", 200, "jpg") == "a/x_200.jpg"
    assert thumbnail_name("a/x.", 200, "jpg") == "a/x._200.jpg"  # no extension: all stem
    assert index_name("a/b/x.jpg") == "a/b/x.json"
    assert index_name("x") == "x.json"


def test_an_unsafe_name_is_named_in_the_error() -> None:
    with pytest.raises(UnsafePath) as e:
        plain_parts("a/../x.jpg")
    assert str(e.value) == "'a/../x.jpg' is not a plain relative path"
    assert plain_parts("a/b/x.jpg") == ["a", "b", "x.jpg"]


def test_the_symlinked_folder_is_named_where_it_is(writer: Writer, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (writer.root / "a").mkdir()
    os.symlink(tmp_path / "elsewhere", writer.root / "a" / "b")
    with pytest.raises(UnsafePath) as e:
        writer.write("a/b/c/x_200.jpg", b"data")
    assert str(e.value) == (
        f"{writer.root}/a/b is a symbolic link or not a folder; thumbd writes only inside"
        f" {writer.root}"
    )
    (writer.root / "f").write_bytes(b"a file")
    with pytest.raises(UnsafePath, match=f"^{writer.root}/f is a symbolic link or not a folder"):
        writer.write("f/x_200.jpg", b"data")


def test_write_all_writes_in_order_and_counts_every_byte(writer: Writer) -> None:
    items = [("a/x_1.jpg", b"12"), ("a/x_2.jpg", b"345"), ("b/y_1.jpg", b"6")]
    assert writer.write_all(items) == 6
    assert [(writer.root / rel).read_bytes() for rel, _ in items] == [b"12", b"345", b"6"]


def test_writes_do_not_depend_on_the_working_directory(
    writer: Writer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # a daemon's working directory may be anything, even removed
    assert writer.write("a/x_200.jpg", b"data") == 4
    assert (writer.root / "a" / "x_200.jpg").read_bytes() == b"data"


@pytest.fixture
def umask() -> Iterator[int]:
    old = os.umask(0o022)
    try:
        yield 0o022
    finally:
        os.umask(old)


def test_files_and_folders_are_made_with_the_umask(writer: Writer, umask: int) -> None:
    writer.write("a/x_200.jpg", b"data")
    assert stat.S_IMODE(os.stat(writer.root / "a").st_mode) == 0o777 & ~umask
    assert stat.S_IMODE(os.stat(writer.root / "a" / "x_200.jpg").st_mode) == 0o666 & ~umask


def test_a_failed_rename_leaves_no_temporary_file(writer: Writer) -> None:
    (writer.root / "x_200.jpg").mkdir()
    (writer.root / "x_200.jpg" / "keep").write_bytes(b"")
    with pytest.raises(IsADirectoryError):
        writer.write("x_200.jpg", b"data")
    assert list((writer.root / TMP_DIR).iterdir()) == []


def test_the_callers_error_survives_a_failed_clean_up(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_room(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def unlink(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", no_room)
    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(OSError) as e:
        writer.write("x_200.jpg", b"data")
    assert e.value.errno == errno.ENOSPC


class Vanishing:
    """os.open where the folder `name` is not there the first `times` opens (removed again
    right after each mkdir)."""

    def __init__(self, name: str, times: int) -> None:
        self.name, self.times, self.real = name, times, os.open

    def __call__(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == self.name and flags & os.O_DIRECTORY and self.times > 0:
            self.times -= 1
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return self.real(path, flags, *args, **kwargs)


def test_a_folder_removed_after_its_mkdir_is_tried_four_times(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    (writer.root / "a").mkdir()
    monkeypatch.setattr(os, "open", Vanishing("a", 3))
    assert writer.write("a/x_200.jpg", b"data") == 4  # the fourth open finds it
    monkeypatch.setattr(os, "open", Vanishing("a", 4))
    with pytest.raises(FileNotFoundError):
        writer.write("a/y_200.jpg", b"data")
    monkeypatch.undo()
    assert sorted(p.name for p in (writer.root / "a").iterdir()) == ["x_200.jpg"]


def test_prepare_makes_the_root_and_clears_what_a_killed_daemon_left(tmp_path: Path) -> None:
    w = Writer(tmp_path / "srv" / "thumbd" / "out")
    w.prepare()
    assert w.tmp.is_dir()
    (w.tmp / "123.0.tmp").write_bytes(b"half a thumbnail")
    (w.tmp / "sub").mkdir()
    w.prepare()  # the next start
    assert w.tmp.is_dir() and list(w.tmp.iterdir()) == []


def test_prepare_replaces_a_file_in_place_of_the_temporary_folder(writer: Writer) -> None:
    writer.cleanup()
    writer.tmp.write_bytes(b"not a folder")
    writer.prepare()
    assert writer.tmp.is_dir() and list(writer.tmp.iterdir()) == []


def test_prepare_keeps_a_temporary_folder_it_could_not_clear(
    writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: None)
    writer.prepare()
    assert writer.tmp.is_dir()


def test_cleanup_removes_the_temporary_folder(writer: Writer) -> None:
    (writer.tmp / "1.0.tmp").write_bytes(b"x")
    writer.cleanup()
    assert not writer.tmp.exists() and writer.root.is_dir()
    writer.cleanup()  # gone already


def test_remove_leaves_empty_folders_unless_asked_to_prune(writer: Writer) -> None:
    writer.write("a/x_200.jpg", b"1")
    writer.remove("a/x_200.jpg")
    assert (writer.root / "a").is_dir() and list((writer.root / "a").iterdir()) == []
    writer.write("x_200.jpg", b"1")
    writer.remove("x_200.jpg", prune=True)  # at the root: no folder to prune
    assert not (writer.root / "x_200.jpg").exists() and writer.root.is_dir()


def test_prune_climbs_every_level(writer: Writer) -> None:
    writer.write("a/b/c/x_200.jpg", b"1")
    writer.remove("a/b/c/x_200.jpg", prune=True)
    assert sorted(p.name for p in writer.root.iterdir()) == [TMP_DIR]


def test_remove_never_reaches_through_a_symlinked_folder(
    writer: Writer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x_200.jpg").write_bytes(b"precious")
    (writer.root / "a").mkdir()
    os.symlink(elsewhere, writer.root / "a" / "b")
    with caplog.at_level(logging.WARNING, logger="thumbd.output"):
        writer.remove("a/b/x_200.jpg", prune=True)
    assert (elsewhere / "x_200.jpg").read_bytes() == b"precious"
    assert caplog.messages == [
        f"not removing {writer.root}/a/b/x_200.jpg: reached through a symbolic link"
    ]


def test_remove_says_why_it_could_not(writer: Writer, caplog: pytest.LogCaptureFixture) -> None:
    (writer.root / "a" / "x_200.jpg").mkdir(parents=True)
    writer.write("a/y_200.jpg", b"1")
    with caplog.at_level(logging.WARNING, logger="thumbd.output"):
        writer.remove("../x_200.jpg")
        writer.remove("a/x_200.jpg")
        writer.remove("a/y_200.jpg", prune=True)  # a/ is not empty: quietly kept
    assert caplog.messages == [
        "not removing ../x_200.jpg: '../x_200.jpg' is not a plain relative path",
        f"cannot remove {writer.root}/a/x_200.jpg: Is a directory",
    ]
    assert (writer.root / "a" / "x_200.jpg").is_dir()


def test_a_link_or_rename_onto_a_link_of_the_same_file_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    # rename() onto another name of the same file does nothing (POSIX): a copy's thumbnail
    # linked onto a name that already is that file, or one moved onto a link of itself.
    w = Writer(tmp_path / "out")
    w.prepare()
    w.write("a_200.jpg", b"picture")
    assert w.link("a_200.jpg", "b_200.jpg")
    assert w.link("a_200.jpg", "b_200.jpg")  # again: b_200 is that file already
    assert sorted(p.name for p in (tmp_path / "out" / TMP_DIR).iterdir()) == []
    assert w.rename("a_200.jpg", "b_200.jpg")  # onto its own link: a_200 goes
    assert not (tmp_path / "out" / "a_200.jpg").exists()
    assert (tmp_path / "out" / "b_200.jpg").read_bytes() == b"picture"
    assert w.rename("b_200.jpg", "b_200.jpg")  # onto itself: it stays
    assert (tmp_path / "out" / "b_200.jpg").read_bytes() == b"picture"
