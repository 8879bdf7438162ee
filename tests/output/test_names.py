"""names: sources of one folder with the same stem never share output names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import images
from thumbd.output import names
from thumbd.output.names import Names, NamesTaken, _under, choose, keys, unowned
from thumbd.render.pipeline import render
from thumbd.render.spec import RenderResult, RenderSpec, Thumbnail
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
    assert indexed.plain and indexed.note is None  # neighbours, but none with these names


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


def test_the_hashed_key_is_the_whole_name_and_8_hex_digits_of_its_sha256() -> None:
    assert keys("a/IMG_1.JPG")[2] == "a/IMG_1.JPG-5ce2a9e8"  # sha256("IMG_1.JPG")
    assert keys("a/b/x.png") == ("a/b/x", "a/b/x.png", "a/b/x.png-3910c650")  # the name only
    # A name that is not UTF-8 (a Latin-1 archive) has a key too, from its bytes.
    assert keys("a/\udcff.jpg")[2] == "a/\udcff.jpg-e6f5276b"


def test_which_names_are_made_from_a_key() -> None:
    assert _under("a/x", "a/x.json") and _under("a/x", "a/x_200.jpg")
    assert _under("a/x", "a/x_avatar.webp")
    assert _under("a/x.", "a/x._200.jpg")  # the stem of `x..jpg` ends in a dot
    assert not _under("a/x", "a/x_200.tar.gz")  # a label has no dot
    assert not _under("a/x", "a/x_200/y.jpg") and not _under("a/x", "a/x_/b.jpg")  # nor a slash
    assert not _under("a/x", "a/x_200") and not _under("a/x", "a/xy_200.jpg")
    assert not _under("a/x", "a/x.png_200.jpg") and not _under("a/x", "a/x.png.json")


def test_every_clash_is_named_in_the_note_and_in_the_error() -> None:
    hashed = keys("a/x.png")[2]
    others = {"a/x.jpg": PLAIN, "a/x.png.jpg": ("a/x.png_200.jpg",)}
    chosen = choose("a/x.png", LABELS, False, (), others)
    assert chosen.note == (
        "a/x.png: a/x_200.jpg already belongs to a/x.jpg; a/x.png_200.jpg already belongs to "
        f"a/x.png.jpg; writing {hashed}_200.jpg, {hashed}_64.jpg instead"
    )
    with pytest.raises(NamesTaken) as e:
        choose("a/x.png", LABELS, False, (), {**others, "a/z": (f"{hashed}_64.jpg",)})
    assert str(e.value) == (
        "no free names for its thumbnails: a/x_200.jpg already belongs to a/x.jpg; "
        f"a/x.png_200.jpg already belongs to a/x.png.jpg; {hashed}_64.jpg already belongs to a/z"
    )


def test_of_two_keys_a_row_lists_only_the_first_counts_as_its_own() -> None:
    qualified = ("a/x.png_200.jpg", "a/x.png_64.jpg")
    chosen = choose("a/x.png", LABELS, False, (*PLAIN, *qualified), {"a/x.jpg": PLAIN})
    assert chosen.all == qualified and chosen.note is not None


def result_with(index: bool) -> RenderResult:
    thumbs = tuple(Thumbnail(w, (w, w), "jpg", bytes([w])) for w in (64, 32))
    data = json.dumps({"thumbnails": [{"file": f"x_{w}.jpg"} for w in (64, 32)]}).encode()
    return RenderResult((1, 2, 3), (100, 100), thumbs, index=data if index else None)


def test_files_pair_every_thumbnail_with_its_name_and_list_them_in_a_nested_index() -> None:
    labels = names.labels(result_with(True))
    qualified = choose("a/b/x.png", labels, True, (), {"a/b/x.jpg": ("a/b/x_64.jpg",)})
    out = names.files(qualified, result_with(True))
    assert [n for n, _ in out] == ["a/b/x.png_64.jpg", "a/b/x.png_32.jpg", "a/b/x.png.json"]
    index = json.loads(out[-1][1])
    assert [t["file"] for t in index["thumbnails"]] == ["x.png_64.jpg", "x.png_32.jpg"]
    assert out[0][1] == bytes([64]) and out[1][1] == bytes([32])
    # Index names but a render without one (or the other way round): no index written.
    assert [n for n, _ in names.files(qualified, result_with(False))] == [
        "a/b/x.png_64.jpg",
        "a/b/x.png_32.jpg",
    ]
    short = Names("a/b/x", ("a/b/x_64.jpg",), None)
    with pytest.raises(ValueError):  # a name for every thumbnail, never fewer
        names.files(short, result_with(False))
