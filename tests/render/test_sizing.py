"""Thumbnail geometry (render/sizing.py): exact sizes, scales and crops for widths, fit, cover and
the attention crop, and boxes mapped between upright and stored pixels. Pure functions on real
Pillow images: every expectation is a number the README's rules give."""

from __future__ import annotations

import random

import pytest
from PIL import Image, ImageDraw, ImageStat

from thumbd.render.sizing import (
    Target,
    _best_window,
    _profile,
    place_by_attention,
    saliency,
    stored_box,
    targets,
)
from thumbd.render.spec import NamedSize

# -- widths and fit ---------------------------------------------------------------------------


def test_widths_keep_the_aspect_and_never_upscale() -> None:
    made = targets((400, 300), (200, 64, 500), ())
    assert made == [
        Target("200", 200, (200, 150), 0.5),
        Target("64", 64, (64, 48), 0.16),
        Target("500", 500, (400, 300), 1.0),  # smaller than the width: its own size
    ]
    assert targets((200, 150), (200,), ()) == [Target("200", 200, (200, 150), 1.0)]


def test_a_thin_strip_is_at_least_one_pixel_high() -> None:
    assert targets((1000, 1), (10,), ()) == [Target("10", 10, (10, 1), 0.01)]


def test_fit_is_decided_by_width_or_by_height_whichever_is_tighter() -> None:
    sizes = (
        NamedSize("wide", 200, 300, "fit"),  # 200/400 < 300/300: the width decides
        NamedSize("low", 200, 100, "fit"),  # 100/300 < 200/400: the height decides
        NamedSize("open", 200, 0, "fit"),  # no height: the width alone
    )
    assert targets((400, 300), (), sizes) == [
        Target("wide", 200, (200, 150), 0.5),
        Target("low", 200, (133, 100), 100 / 300),
        Target("open", 200, (200, 150), 0.5),
    ]


def test_fit_of_a_small_source_shrinks_only_for_the_side_that_does_not_fit() -> None:
    sizes = (NamedSize("in", 200, 100, "fit"), NamedSize("flat", 200, 40, "fit"))
    assert targets((100, 80), (), sizes) == [
        Target("in", 200, (100, 80), 1.0),  # inside the box: untouched
        Target("flat", 200, (50, 40), 0.5),  # too tall for it: the height decides
    ]
    assert targets((1, 1000), (), (NamedSize("t", 100, 10, "fit"),)) == [
        Target("t", 100, (1, 10), 0.01)  # at least one pixel wide
    ]


def test_width_mode_ignores_a_height() -> None:
    size = NamedSize("w", 100, 50, "width")
    assert targets((400, 300), (), (size,)) == [Target("w", 100, (100, 75), 0.25)]


def test_widths_come_first_then_named_sizes_in_their_order() -> None:
    sizes = (NamedSize("b", 50, 50, "cover"), NamedSize("a", 30))
    assert [t.label for t in targets((400, 300), (64, 32), sizes)] == ["64", "32", "b", "a"]


# -- cover ------------------------------------------------------------------------------------


def test_cover_fills_the_box_and_crops_the_centre() -> None:
    (wide,) = targets((400, 300), (), (NamedSize("sq", 100, 100, "cover"),))
    assert wide == Target("sq", 100, (100, 100), 1 / 3, (50.0, 0.0, 350.0, 300.0))
    (tall,) = targets((300, 600), (), (NamedSize("sq", 100, 100, "cover", "attention"),))
    assert tall == Target("sq", 100, (100, 100), 1 / 3, (0.0, 150.0, 300.0, 450.0), True)


def test_cover_of_a_source_smaller_than_the_box_keeps_its_scale_and_the_box_shape() -> None:
    (tall,) = targets((50, 200), (), (NamedSize("sq", 100, 100, "cover"),))
    assert tall == Target("sq", 100, (50, 50), 1.0, (0.0, 75.0, 50.0, 125.0))
    (wide,) = targets((300, 40), (), (NamedSize("banner", 400, 100, "cover"),))
    assert wide == Target("banner", 400, (160, 40), 1.0, (70.0, 0.0, 230.0, 40.0))


def test_cover_of_an_exact_fit_crops_nothing() -> None:
    (same,) = targets((200, 100), (), (NamedSize("x", 100, 50, "cover"),))
    assert same == Target("x", 100, (100, 50), 0.5, (0.0, 0.0, 200.0, 100.0))


def test_cover_never_makes_a_side_larger_than_the_box_nor_smaller_than_a_pixel() -> None:
    (strip,) = targets((3000, 7), (), (NamedSize("x", 99, 1, "cover"),))
    assert strip.size == (99, 1)
    x0, y0, x1, y1 = strip.crop or (0, 0, 0, 0)
    assert (y0, y1) == (0.0, 7.0) and x1 - x0 == pytest.approx(99 * 7)


# -- stored and upright boxes -----------------------------------------------------------------

TRANSPOSE = {  # what ImageOps.exif_transpose applies to the stored image for each orientation
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_box_in_upright_pixels_shows_the_same_pixels_in_the_stored_image(
    orientation: int,
) -> None:
    rnd = random.Random(orientation)
    stored = Image.frombytes("L", (40, 30), bytes(rnd.randrange(256) for _ in range(1200)))
    method = TRANSPOSE.get(orientation)
    upright = stored if method is None else stored.transpose(method)
    box = (3, 5, 17, 12)
    region = stored.crop(tuple(int(v) for v in stored_box(box, upright.size, orientation)))
    shown = region if method is None else region.transpose(method)
    assert shown.tobytes() == upright.crop(box).tobytes()


def test_stored_boxes_exactly() -> None:
    box = (0.0, 0.0, 10.0, 5.0)
    expected = {
        1: (0, 0, 10, 5),
        2: (30, 0, 40, 5),
        3: (30, 25, 40, 30),
        4: (0, 25, 10, 30),
        5: (0, 0, 5, 10),
        6: (0, 30, 5, 40),
        7: (25, 30, 30, 40),
        8: (25, 0, 30, 10),
    }
    assert {o: stored_box(box, (40, 30), o) for o in expected} == expected


# -- attention --------------------------------------------------------------------------------


def test_the_best_window_finds_a_peak_and_ties_go_to_the_centre() -> None:
    peak = [0.0, 0.0, 0.0, 9.0, 9.0, 0.0, 0.0, 0.0]
    assert _best_window(peak, 0.25) == 3 / 8
    assert _best_window([9.0] + [0.0] * 7, 0.25) == 0.0  # the only window holding it
    assert _best_window([0.0, 9.0] + [0.0] * 6, 0.25) == 1 / 8  # of two, the one nearer the centre
    assert _best_window([1.0] * 8, 0.25) == 3 / 8  # all alike: the centre
    assert _best_window([1.0] * 9, 1 / 3) == 3 / 9
    assert _best_window([0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0], 0.125) == 1 / 8  # as near
    assert _best_window([0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 5.0, 0.0], 0.125) == 2 / 8  # nearer
    assert _best_window([0.0, 0.0, 5.0, 0.0, 0.0, 5.0, 0.0, 0.0], 0.125) == 2 / 8  # first
    assert _best_window([0.0, 0.0, 4.0, 0.0, 0.0, 5.0, 0.0, 0.0], 0.125) == 5 / 8  # more
    assert _best_window([0.0] * 7 + [9.0], 0.25) == 0.75  # at the end
    assert _best_window([0.0] * 9 + [9.0], 0.25) == 0.75  # never past 1 - fraction
    assert _best_window([0.0] * 9 + [9.0], 0.01) == 0.9  # at least one value wide
    assert _best_window([3.0, 1.0], 1.0) == 0.0  # the whole: nothing to move


def test_the_best_window_counts_each_value_once_as_it_slides() -> None:
    values = [1.0, 2.0, 3.0, 0.0, 0.0, 2.5, 2.5, 0.0, 0.0, 0.0]
    assert _best_window(values, 0.3) == 0.0  # 1+2+3 = 6 beats 2.5+2.5 = 5
    assert _best_window(values, 0.2) == 0.5  # 2.5+2.5 ties 2+3: the nearer the centre


def test_profiles_are_mean_energy_per_column_or_row() -> None:
    energy = Image.new("L", (4, 2))
    energy.putdata([0, 10, 20, 30, 100, 110, 120, 130])
    assert _profile(energy, horizontal=True) == [50.0, 60.0, 70.0, 80.0]
    assert _profile(energy, horizontal=False) == [15.0, 115.0]


def test_saliency_is_dark_on_flat_grey_and_bright_on_edges_colour_and_skin() -> None:
    grey = saliency(Image.new("RGB", (200, 100), (128, 128, 128)))
    assert grey.mode == "L" and grey.size == (96, 48)
    assert grey.getextrema() == (0, 0)
    red = saliency(Image.new("RGB", (50, 50), (220, 30, 30)))  # vivid: a quarter of the scale
    assert red.size == (50, 50) and red.getextrema() == (63, 63)
    skin = saliency(Image.new("RGB", (50, 50), (224, 172, 150)))  # skin (and vivid): more
    assert skin.getextrema() == (145, 145)
    dim = saliency(Image.new("RGB", (50, 50), (30, 30, 40)))  # some colour, but dark
    assert dim.getextrema() == (2, 2)
    lines = Image.new("RGB", (60, 60), (128, 128, 128))
    ImageDraw.Draw(lines).line((30, 0, 30, 59), fill=(0, 0, 0))
    row = [saliency(lines).getpixel((x, 30)) for x in range(26, 35)]
    assert row == [0, 0, 21, 21, 42, 21, 21, 0, 0]  # its two edges, smoothed a little


def busy(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """Flat grey with one textured, colourful patch in `box`."""
    im = Image.new("RGB", size, (128, 128, 128))
    draw = ImageDraw.Draw(im)
    x0, y0, x1, y1 = box
    for x in range(x0, x1, 4):
        draw.line((x, y0, x, y1 - 1), fill=(230, 40, 40) if x % 8 else (20, 20, 200))
    return im


def test_the_attention_crop_stays_in_the_centre_when_the_subject_is_there() -> None:
    (target,) = targets((300, 100), (), (NamedSize("sq", 50, 50, "cover", "attention"),))
    assert target.crop == (100.0, 0.0, 200.0, 100.0)
    placed = place_by_attention(target, busy((300, 100), (110, 0, 190, 100)), (300, 100))
    x0, y0, x1, y1 = placed.crop or (0, 0, 0, 0)
    assert (y0, y1) == (0.0, 100.0) and x1 - x0 == pytest.approx(100.0)
    assert 95 <= x0 <= 105


def test_the_attention_crop_moves_to_the_subject_along_the_cropped_axis() -> None:
    (wide,) = targets((300, 100), (), (NamedSize("sq", 50, 50, "cover", "attention"),))
    left = place_by_attention(wide, busy((300, 100), (0, 0, 80, 100)), (300, 100))
    assert left.crop == (0.0, 0.0, 100.0, 100.0)
    right = place_by_attention(wide, busy((300, 100), (220, 0, 300, 100)), (300, 100))
    assert right.crop is not None and right.crop[0] == pytest.approx(200.0)
    assert right.crop[2] == pytest.approx(300.0) and right.crop[1::2] == (0.0, 100.0)
    (tall,) = targets((100, 300), (), (NamedSize("sq", 50, 50, "cover", "attention"),))
    low = place_by_attention(tall, busy((100, 300), (0, 230, 100, 300)), (100, 300))
    assert low.crop is not None and low.crop[0::2] == (0.0, 100.0)
    assert low.crop[1] == pytest.approx(200.0) and low.crop[3] == pytest.approx(300.0)
    assert (low.size, low.scale, low.attention) == (tall.size, tall.scale, True)


def test_the_attention_crop_leaves_a_crop_of_the_whole_picture_alone() -> None:
    (whole,) = targets((200, 100), (), (NamedSize("x", 100, 50, "cover", "attention"),))
    assert place_by_attention(whole, busy((200, 100), (0, 0, 50, 100)), (200, 100)) is whole


def test_a_faint_subject_is_not_outweighed_by_the_pictures_own_border() -> None:
    """Pillow leaves a 3x3 filter's outermost pixels unfiltered: unblanked, the frame of any
    picture looked like edges, and a faint subject's crop was pulled to a side."""
    (target,) = targets((300, 100), (), (NamedSize("sq", 50, 50, "cover", "attention"),))
    im = Image.new("RGB", (300, 100), (128, 128, 128))
    ImageDraw.Draw(im).ellipse((170, 20, 230, 80), fill=(120, 120, 120))  # a pale figure
    placed = place_by_attention(target, im, (300, 100))
    assert placed.crop is not None
    assert placed.crop[0] <= 170 and placed.crop[2] >= 230  # all of it in the crop
    flat = saliency(Image.new("RGB", (120, 90), (90, 140, 200)))  # a clear sky: no edge at all
    assert flat.getextrema() == (63, 63)
    assert saliency(Image.new("RGB", (200, 2), (128, 128, 128))).size == (96, 1)  # too thin


@pytest.mark.parametrize(
    ("colour", "value"),
    [
        ((191, 143, 56), 63),  # Cb 76: just below skin's range (vivid only)
        ((190, 146, 60), 191),  # Cb 77: skin
        ((154, 93, 113), 142),  # Cb 127: skin
        ((154, 101, 119), 13),  # Cb 128: not skin
        ((153, 150, 113), 9),  # Cr 132: not skin
        ((154, 149, 109), 138),  # Cr 133: skin
        ((182, 92, 81), 191),  # Cr 173: skin
        ((182, 94, 66), 63),  # Cr 174: not skin (vivid only)
        ((131, 59, 136), 19),  # Cr in skin's range, Cb far above it: not skin
        ((0, 0, 90), 22),  # saturation x value 90: not yet vivid
        ((0, 0, 91), 63),  # 91: vivid
        ((118, 26, 112), 63),
    ],
)
def test_the_skin_and_colour_cues_have_exact_bounds(
    colour: tuple[int, int, int], value: int
) -> None:
    assert saliency(Image.new("RGB", (8, 8), colour)).getextrema() == (value, value)


def test_edges_at_the_border_and_of_a_faint_line_are_measured_as_inside() -> None:
    im = Image.new("RGB", (60, 60), (128, 128, 128))
    draw = ImageDraw.Draw(im)
    draw.line((0, 30, 59, 30), fill=(100, 100, 100))  # faint: its edges are not saturated
    draw.line((59, 0, 59, 59), fill=(0, 0, 0))  # the last column
    energy = saliency(im)
    assert [energy.getpixel((20, y)) for y in range(27, 34)] == [0, 14, 14, 28, 14, 14, 0]
    assert [energy.getpixel((x, 10)) for x in range(55, 60)] == [0, 0, 21, 21, 21]
    assert saliency(Image.new("L", (20, 20), 128)).getextrema() == (0, 0)  # any mode in


def test_a_large_picture_is_shrunk_by_averaging_before_its_map_is_made() -> None:
    stripes = Image.new("RGB", (300, 150), (128, 128, 128))
    draw = ImageDraw.Draw(stripes)
    for x in range(0, 300, 7):
        draw.line((x, 0, x, 149), fill=(90, 90, 90))
    energy = saliency(stripes)
    assert energy.size == (96, 48) and ImageStat.Stat(energy).sum == [75072.0]
    # Stripes from top to bottom: every column of the map is one value, the border rows too.
    assert all(len(set(energy.crop((x, 0, x + 1, 48)).tobytes())) == 1 for x in range(96))


def test_a_line_meeting_the_border_is_measured_there_as_inside() -> None:
    # Faint lines (their edges are not saturated) across the picture, near one end of each side.
    across = Image.new("RGB", (40, 30), (128, 128, 128))
    ImageDraw.Draw(across).line((0, 3, 39, 3), fill=(100, 100, 100))
    energy = saliency(across)
    for x in (0, 1, 20, 38, 39):
        assert [energy.getpixel((x, y)) for y in range(7)] == [0, 14, 14, 28, 14, 14, 0]
    down = Image.new("RGB", (40, 30), (128, 128, 128))
    ImageDraw.Draw(down).line((36, 0, 36, 29), fill=(100, 100, 100))
    energy = saliency(down)
    for y in (0, 1, 15, 28, 29):
        assert [energy.getpixel((x, y)) for x in range(33, 40)] == [0, 14, 14, 28, 14, 14, 0]


@pytest.mark.parametrize(
    "turn",
    [Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_180],
)
def test_the_map_of_a_turned_picture_is_the_map_turned(turn: Image.Transpose) -> None:
    rnd = random.Random(7)
    im = Image.new("RGB", (24, 16))
    im.putdata([tuple(rnd.randrange(90, 170) for _ in "rgb") for _ in range(24 * 16)])
    assert saliency(im.transpose(turn)).tobytes() == saliency(im).transpose(turn).tobytes()


def test_the_map_is_made_from_the_colours_whatever_the_mode() -> None:
    rnd = random.Random(3)
    im = Image.new("RGB", (24, 16))
    im.putdata([tuple(rnd.randrange(0, 256) for _ in "rgb") for _ in range(24 * 16)])
    for mode in ("YCbCr", "HSV", "RGBA", "P", "L"):
        other = im.convert(mode)
        assert saliency(other).tobytes() == saliency(other.convert("RGB")).tobytes(), mode


def test_profiles_average_every_row_or_column() -> None:
    energy = Image.new("L", (2, 4))
    energy.putdata([0, 0, 0, 0, 0, 0, 120, 120])
    assert _profile(energy, horizontal=True) == [30.0, 30.0]
    assert _profile(energy, horizontal=False) == [0.0, 0.0, 0.0, 120.0]


def test_cover_of_a_one_pixel_source_is_one_pixel() -> None:
    (thin,) = targets((1, 50), (), (NamedSize("sq", 100, 100, "cover"),))
    assert thin.size == (1, 1) and thin.crop == (0.0, 24.5, 1.0, 25.5)
    (flat,) = targets((50, 1), (), (NamedSize("sq", 100, 100, "cover"),))
    assert flat.size == (1, 1) and flat.crop == (24.5, 0.0, 25.5, 1.0)


def test_a_crop_short_of_the_picture_by_half_a_pixel_or_more_is_placed() -> None:
    picture = busy((100, 100), (0, 0, 30, 100))
    one_short = Target("x", 99, (99, 100), 1.0, (0.5, 0.0, 99.5, 100.0), attention=True)
    moved = place_by_attention(one_short, picture, (100, 100))
    assert moved.crop is not None and moved.crop[0] == 0.0  # towards the busy left
    tall = Target("x", 100, (100, 99), 1.0, (0.0, 0.5, 100.0, 99.5), attention=True)
    lines = Image.new("RGB", (100, 100), (128, 128, 128))  # a red band at the top
    ImageDraw.Draw(lines).rectangle((0, 0, 99, 20), fill=(230, 40, 40))
    assert place_by_attention(tall, lines, (100, 100)).crop == (0.0, 0.0, 100.0, 99.0)
    half = Target("x", 99, (99, 100), 1.0, (0.25, 0.0, 99.75, 100.0), attention=True)
    assert place_by_attention(half, picture, (100, 100)) is half  # less than that: left alone
    half_tall = Target("x", 100, (100, 99), 1.0, (0.0, 0.25, 100.0, 99.75), attention=True)
    assert place_by_attention(half_tall, lines, (100, 100)) is half_tall
