"""names: sources of one folder with the same stem never share output names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import images
from thumbd.output import names
from thumbd.output.names import NamesTaken, choose, keys, unowned
from thumbd.render.pipeline import render
from thumbd.render.spec import RenderSpec
from thumbd.store.state import State

LABELS = [("200", "jpg"), ("64", "jpg")]
PLAIN = ("a/x_200.jpg", "a/x_64.jpg")


def test_keys_are_the_stem_then_the_whole_name_then_the_name_with_a_hash() -> None:
    plain, whole, hashed = keys("a/IMG_1.JPG")
    assert (plain, whole) == ("a/IMG_1", "a/IMG_1.JPG")
    assert hashed.startswith("a/IMG_1.JPG-") and len(hashed) == len(whole) + 9
    assert keys("a/IMG_1.JPG") == keys("a/IMG_1.JPG")  # the same on every run
    assert keys("x.png")[:2] == ("x", "x.png")


def test_a_lone_source_gets_the_plain_names() -> None:
    chosen = choose("a/x.jpg", LABELS, False, (), {})
    assert chosen.all == PLAIN and chosen.plain and chosen.note is None
    indexed = choose("a/x.jpg", LABELS, True, (), {"a/y.jpg": ("a/y_200.jpg",)})
    assert indexed.all == (*PLAIN, "a/x.json")


def test_a_sibling_holding_the_plain_names_pushes_to_the_whole_file_name() -> None:
    others = {"a/x.jpg": (*PLAIN, "a/x.json")}
    chosen = choose("a/x.png", LABELS, True, (), others)
    assert chosen.all == ("a/x.png_200.jpg", "a/x.png_64.jpg", "a/x.png.json")
    assert not chosen.plain
    assert chosen.note == (
        "a/x.png: a/x_200.jpg already belongs to a/x.jpg; "
        "writing a/x.png_200.jpg, a/x.png_64.jpg, a/x.png.json instead"
    )
    # Only one shared name (another width, another format) is enough to step aside.
    assert not choose("a/x.png", LABELS, False, (), {"a/x.jpg": ("a/x_64.jpg",)}).plain


def test_own_names_are_kept_and_noted_only_the_first_time() -> None:
    qualified = ("a/x.png_200.jpg", "a/x.png_64.jpg")
    again = choose("a/x.png", LABELS, False, qualified, {"a/x.jpg": PLAIN})
    assert again.all == qualified and again.note is None
    # The sibling is gone: the qualified names stay (no flip), also with other widths.
    alone = choose("a/x.png", [("300", "png")], False, qualified, {})
    assert alone.all == ("a/x.png_300.png",)
    # The first owner keeps the plain names on a re-render: its sibling lists other names.
    assert choose("a/x.jpg", LABELS, False, PLAIN, {"a/x.png": qualified}).all == PLAIN


def test_own_names_another_row_lists_too_are_given_up() -> None:
    # Rows written before sources of one stem had names of their own list the same names.
    chosen = choose("a/x.png", LABELS, False, PLAIN, {"a/x.jpg": PLAIN})
    assert chosen.all == ("a/x.png_200.jpg", "a/x.png_64.jpg")


def test_a_third_file_holding_the_whole_name_pushes_to_the_hash() -> None:
    others = {"a/x.jpg": PLAIN, "a/x.png.jpg": ("a/x.png_200.jpg", "a/x.png_64.jpg")}
    chosen = choose("a/x.png", LABELS, False, (), others)
    assert chosen.key == keys("a/x.png")[2]
    assert chosen.note is not None and "a/x.png_200.jpg already belongs to a/x.png.jpg" in (
        chosen.note
    )
    everything = {**others, "a/x.png-z.jpg": (f"{keys('a/x.png')[2]}_200.jpg",)}
    with pytest.raises(NamesTaken, match=r"already belongs to a/x\.png-z\.jpg"):
        choose("a/x.png", LABELS, False, (), everything)


def test_unowned_keeps_what_another_row_lists() -> None:
    assert unowned(["a/x_200.jpg", "a/x_64.jpg"], {"a/x.png": ("a/x_64.jpg",)}) == ["a/x_200.jpg"]
    assert unowned(["a/x_200.jpg"], {}) == ["a/x_200.jpg"]


def test_the_index_lists_the_names_written(tmp_path: Path) -> None:
    source = images.make_jpeg(tmp_path / "x.png.jpg")  # any name: render() takes the stem
    result = render(str(source), RenderSpec(widths=(64, 32), index=True))
    plain = choose("a/x.jpg", names.labels(result), True, (), {})
    files = names.files(plain, result)
    assert files[-1] == ("a/x.json", result.index)  # untouched
    qualified = choose("a/x.png", names.labels(result), True, (), {"a/x.jpg": plain.all})
    files = names.files(qualified, result)
    assert [name for name, _ in files] == ["a/x.png_64.jpg", "a/x.png_32.jpg", "a/x.png.json"]
    index = json.loads(files[-1][1])
    assert [t["file"] for t in index["thumbnails"]] == ["x.png_64.jpg", "x.png_32.jpg"]
    assert index == {**json.loads(result.index or b""), "thumbnails": index["thumbnails"]}
    assert files[0][1] == result.thumbnails[0].data


def test_outputs_near_reads_the_stem_and_its_dotted_names_in_the_folder(tmp_path: Path) -> None:
    state = State(tmp_path / "t.db")
    try:
        paths = ["a/x.jpg", "a/x.png", "a/x.png.jpg", "a/x", "a/x.d/y.jpg", "a/x-1.jpg"]
        paths += ["a/xy.jpg", "a/x_1.jpg", "b/x.jpg", "x.jpg", "a/b/x.jpg"]
        for path in paths:
            state.record_done(path, (1, 2, 3), [f"{path}.out"], 1, 1)
        near = state.outputs_near("a/x")
        assert sorted(near) == ["a/x", "a/x.jpg", "a/x.png", "a/x.png.jpg"]
        assert near["a/x.png"] == ("a/x.png.out",)
    finally:
        state.close()
