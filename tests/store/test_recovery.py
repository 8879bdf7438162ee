"""recovery: a lost or damaged state database, and thumbnails that are already there."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from thumbd.render.spec import NamedSize, RenderSpec
from thumbd.store.recovery import Siblings, existing_thumbnails, open_state, own_thumbnails


def make(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_complete_set_written_after_the_source_counts(tmp_path: Path) -> None:
    source = make(tmp_path / "in" / "a" / "x.jpg")
    out = tmp_path / "out"
    make(out / "a" / "x_200.jpg", b"12345")
    make(out / "a" / "x_64.png", b"123")
    found = existing_thumbnails(out, "a/x.jpg", RenderSpec(widths=(200, 64)), str(source))
    assert found == (["a/x_200.jpg", "a/x_64.png"], 8)
    assert (
        existing_thumbnails(out, "a/x.jpg", RenderSpec(widths=(200, 64, 32)), str(source)) is None
    )
    webp = RenderSpec(widths=(200, 64), format="webp")  # other formats were asked for
    assert existing_thumbnails(out, "a/x.jpg", webp, str(source)) is None


def test_named_sizes_and_the_index_belong_to_the_set(tmp_path: Path) -> None:
    source = make(tmp_path / "in" / "x.jpg")
    out = tmp_path / "out"
    make(out / "x_200.jpg")
    spec = RenderSpec(widths=(200,), sizes=(NamedSize("avatar", 64, 64, "cover", "centre"),))
    assert existing_thumbnails(out, "x.jpg", spec, str(source)) is None
    make(out / "x_avatar.jpg")
    assert existing_thumbnails(out, "x.jpg", spec, str(source)) is not None
    indexed = RenderSpec(widths=(200,), sizes=spec.sizes, index=True)
    assert existing_thumbnails(out, "x.jpg", indexed, str(source)) is None
    make(out / "x.json")
    assert existing_thumbnails(out, "x.jpg", indexed, str(source)) is not None


def test_a_source_that_changed_after_its_thumbnails_does_not_count(tmp_path: Path) -> None:
    out = tmp_path / "out"
    make(out / "x_200.jpg")
    time.sleep(0.01)  # paces the writes: the source's ctime must come after the thumbnail's
    source = make(tmp_path / "in" / "x.jpg")
    past = time.time() - 3600  # an old mtime (cp -p) does not hide the new ctime
    os.utime(source, (past, past))
    assert existing_thumbnails(out, "x.jpg", RenderSpec(widths=(200,)), str(source)) is None


def test_only_names_no_sibling_could_have_written_are_adopted(tmp_path: Path) -> None:
    incoming, out, spec = tmp_path / "in", tmp_path / "out", RenderSpec(widths=(200,))
    jpg, png = make(incoming / "x.jpg"), make(incoming / "x.png")
    make(out / "x_200.jpg", b"123")
    make(out / "x.png_200.jpg", b"12")
    siblings = Siblings()
    # Whose is x_200.jpg? Nothing says: x.jpg is rendered again. x.png's own set is its own.
    assert own_thumbnails(out, "x.jpg", spec, str(jpg), siblings) is None
    assert own_thumbnails(out, "x.png", spec, str(png), siblings) == (["x.png_200.jpg"], 2)
    png.unlink()  # alone again: the plain names are x.jpg's
    assert own_thumbnails(out, "x.jpg", spec, str(jpg), siblings) == (["x_200.jpg"], 3)
    # x.png.jpg's plain names are x.png_200.jpg: x.png cannot claim them while it is there.
    make(incoming / "x.png")
    make(incoming / "x.png.jpg")
    assert own_thumbnails(out, "x.png", spec, str(incoming / "x.png"), siblings) is None


def test_a_quiet_folder_is_listed_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    source = make(folder / "x.jpg")
    make(folder / "x.png")
    past = time.time() - 60
    os.utime(folder, (past, past))
    siblings = Siblings()
    assert siblings.contested(str(source)) == {"x"}
    os.unlink(folder / "x.png")
    os.utime(folder, (past, past))  # a change the mtime does not show is not seen: cached
    assert siblings.contested(str(source)) == {"x"}
    os.utime(folder)  # the folder changed: listed again, and now too fresh to be kept
    assert siblings.contested(str(source)) == frozenset()
    make(folder / "x.gif")
    assert siblings.contested(str(source)) == {"x"}


def test_a_damaged_database_is_moved_aside_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "state" / "thumbd.db"
    make(db, os.urandom(4096))
    with caplog.at_level(logging.WARNING, "thumbd"):
        state = open_state(db, tmp_path / "out")
    try:
        assert state.totals().done == 0
    finally:
        state.close()
    assert "is damaged" in caplog.text
    assert len(list(db.parent.glob("thumbd.db.damaged-*"))) == 1


def test_a_missing_database_is_worth_a_warning_only_after_a_first_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, "thumbd"):
        open_state(tmp_path / "s1" / "thumbd.db", out).close()
        assert "missing" not in caplog.text
        make(out / "x_200.jpg")
        open_state(tmp_path / "s2" / "thumbd.db", out).close()
    assert "is missing; rebuilding it" in caplog.text


def test_after_reboot_looks_only_after_a_new_boot_and_only_at_the_last_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from thumbd.store import recovery
    from thumbd.store.state import REDO, State

    out = tmp_path / "out"
    make(out / "old_200.jpg", b"\xff\xd8 jpeg \xff\xd9")
    make(out / "new_200.jpg", b"\xff\xd8 jpeg \xff\xd9")
    state = State(tmp_path / "thumbd.db")
    for rel in ("old.jpg", "new.jpg"):
        state.record_done(rel, (10, 1, 1), [rel.replace(".jpg", "_200.jpg")], 10, 10)
    state.commit()
    hour_ago = time.time() - 3600
    state._db.execute("UPDATE sources SET updated = ? WHERE path = 'old.jpg'", (hour_ago,))
    monkeypatch.setenv("THUMBD_TEST_BOOT_ID", "boot-1")
    recovery.after_reboot(state, out)  # the first run that knows its boot: nothing to compare
    (out / "old_200.jpg").unlink()
    (out / "new_200.jpg").unlink()
    recovery.after_reboot(state, out)  # the same boot: a process crash loses no written file

    def mtimes() -> dict[str, int]:  # REDO marks a record to be rendered again
        return {r: rec.signature[1] for r in ("old.jpg", "new.jpg") if (rec := state.get(r))}

    assert mtimes() == {"old.jpg": 1, "new.jpg": 1}
    monkeypatch.setenv("THUMBD_TEST_BOOT_ID", "boot-2")
    recovery.after_reboot(state, out)
    assert mtimes() == {"old.jpg": 1, "new.jpg": REDO}  # older than REBOOT_WINDOW: written back
    state.close()
