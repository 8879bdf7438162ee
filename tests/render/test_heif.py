"""The HEIF fast path: an embedded thumbnail is used only when it is the picture, large enough.

Every file here is a real HEIC made by pillow-heif (tests/render/heic_files.py) whose thumbnail
is shrunk from a picture of our choosing. The primary is the orientation probe (red top-left
quadrant, blue elsewhere); the thumbnail's picture is the probe with green instead of blue, so
the colour of a thumbnail thumbd made tells which image it came from.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests import images
from tests.render.heic_files import heic, thumbnail_extent
from thumbd.render.decoders import heif, pillow
from thumbd.render.pipeline import render
from thumbd.render.spec import NamedSize, RenderResult, RenderSpec

pytestmark = pytest.mark.skipif(
    "HEIF" not in pillow.ALLOWED_FORMATS, reason="pillow-heif is not installed"
)

UPRIGHT = (1200, 750)  # the primary, upright; its 320 px thumbnail is 320x200
GREEN = (0, 255, 0)
DEFAULT = RenderSpec()  # widths 200, 64, 32


def primary_probe() -> Image.Image:
    return images.upright_probe(UPRIGHT)


def thumbnail_probe(size: tuple[int, int] = UPRIGHT) -> Image.Image:
    """What the thumbnail is shrunk from: the probe, green where the primary is blue."""
    im = Image.new("RGB", size, GREEN)
    ImageDraw.Draw(im).rectangle((0, 0, size[0] // 2 - 1, size[1] // 2 - 1), fill=images.RED)
    return im


def stored(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels to store so that `orientation` turns them upright."""
    method = images.STORE_TRANSPOSE[orientation]
    return upright if method is None else upright.transpose(method)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def thumbnails_of(path: Path, spec: RenderSpec = DEFAULT) -> list[Image.Image]:
    result = render(str(path), spec)
    assert result.error is None, result.error
    return [Image.open(io.BytesIO(t.data)).convert("RGB") for t in result.thumbnails]


def came_from(im: Image.Image) -> str:
    """ "thumbnail" or "primary", by the colour of the bottom-right quadrant; checks the
    picture is upright (landscape, red top-left) on the way."""
    w, h = im.size
    assert w > h, f"not upright: {im.size}"
    r, g, b = im.getpixel((w // 4, h // 4))
    assert r > 180 and g < 80 and b < 80, f"top-left is not red: {(r, g, b)}"
    r, g, b = im.getpixel((3 * w // 4, 3 * h // 4))
    if g > 180 and b < 80:
        return "thumbnail"
    assert b > 180 and g < 80, f"neither green nor blue: {(r, g, b)}"
    return "primary"


def probe_file(tmp_path: Path, **kwargs: object) -> Path:
    return write(tmp_path / "photo.heic", heic(primary_probe(), thumbnail_probe(), **kwargs))


# --------------------------------------------------------------------------------------------
# Used


def test_a_thumbnail_covering_every_width_is_used(tmp_path: Path) -> None:
    path = probe_file(tmp_path)
    result = render(str(path), RenderSpec())  # widths 200, 64, 32; the thumbnail is 320x200
    assert result.error is None, result.error
    assert result.source_size == UPRIGHT  # the source's size, not the thumbnail's
    assert [t.size for t in result.thumbnails] == [(200, 125), (64, 40), (32, 20)]
    assert [came_from(im) for im in thumbnails_of(path)] == ["thumbnail"] * 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_thumbnail_turned_as_the_primary_is_used_and_comes_out_upright(
    tmp_path: Path, orientation: int
) -> None:
    data = heic(
        stored(primary_probe(), orientation),
        stored(thumbnail_probe(), orientation),
        orientation=orientation,
    )
    path = write(tmp_path / "photo.heic", data)
    (im,) = thumbnails_of(path, RenderSpec(widths=(160,)))
    assert im.size == (160, 100)
    assert came_from(im) == "thumbnail"


def test_a_thumbnail_exactly_as_large_as_the_largest_width_is_used(tmp_path: Path) -> None:
    path = probe_file(tmp_path)
    assert [came_from(im) for im in thumbnails_of(path, RenderSpec(widths=(320,)))] == ["thumbnail"]
    assert [came_from(im) for im in thumbnails_of(path, RenderSpec(widths=(321,)))] == ["primary"]


# --------------------------------------------------------------------------------------------
# Not used


def test_a_thumbnail_smaller_than_a_width_is_not_used(tmp_path: Path) -> None:
    path = probe_file(tmp_path, box=160)  # 160x100: the 200 px width needs more
    assert [came_from(im) for im in thumbnails_of(path)] == ["primary"] * 3


def test_a_thumbnail_smaller_than_a_named_size_is_not_used(tmp_path: Path) -> None:
    path = probe_file(tmp_path)  # 320x200
    cover = NamedSize("card", 400, 250, "cover")
    spec = RenderSpec(widths=(100,), sizes=(cover,))
    assert [came_from(im) for im in thumbnails_of(path, spec)] == ["primary", "primary"]
    assert [came_from(im) for im in thumbnails_of(path, RenderSpec(widths=(100,)))] == ["thumbnail"]


@pytest.mark.parametrize(
    ("orientation", "thumbnail_orientation"),
    [
        (6, 1),  # libheif #548: the primary is rotated, its thumbnail was written without it
        (1, 6),
        (1, 3),  # half a turn: the same shape, only the turns tell
        (1, 2),  # mirrored: the same shape too
        (8, 6),
    ],
)
def test_a_thumbnail_turned_otherwise_than_the_primary_is_not_used(
    tmp_path: Path, orientation: int, thumbnail_orientation: int
) -> None:
    data = heic(
        stored(primary_probe(), orientation),
        stored(thumbnail_probe(), orientation),
        orientation=orientation,
        thumbnail_orientation=thumbnail_orientation,
    )
    path = write(tmp_path / "photo.heic", data)
    assert [came_from(im) for im in thumbnails_of(path)] == ["primary"] * 3


def letterboxed(horizontal_bars: bool) -> Image.Image:
    """The thumbnail's picture squeezed inside black bars, keeping the primary's shape."""
    framed = Image.new("RGB", UPRIGHT, "black")
    w, h = UPRIGHT
    inner = (w, h * 3 // 4) if horizontal_bars else (w * 3 // 4, h)
    framed.paste(thumbnail_probe(inner), ((w - inner[0]) // 2, (h - inner[1]) // 2))
    return framed


@pytest.mark.parametrize("horizontal_bars", [True, False], ids=["letterbox", "pillarbox"])
def test_a_thumbnail_with_bars_is_not_used(tmp_path: Path, horizontal_bars: bool) -> None:
    data = heic(primary_probe(), letterboxed(horizontal_bars))
    path = write(tmp_path / "photo.heic", data)
    assert [came_from(im) for im in thumbnails_of(path)] == ["primary"] * 3


def test_bars_are_told_from_pictures() -> None:
    # Guards the test above: the detector finds the bars, and not in the plain probes.
    assert heif.letterboxed(letterboxed(True).resize((320, 200)))
    assert heif.letterboxed(letterboxed(False).resize((320, 200)))
    assert not heif.letterboxed(thumbnail_probe((320, 200)))
    assert not heif.letterboxed(images.natural((320, 200)))
    assert not heif.letterboxed(Image.new("RGB", (320, 200), "black"))  # flat: no bars


def test_a_thumbnail_of_another_shape_is_not_used(tmp_path: Path) -> None:
    data = heic(primary_probe(), thumbnail_probe((1200, 600)))  # 2:1, the primary is 1.6:1
    path = write(tmp_path / "photo.heic", data)
    assert [came_from(im) for im in thumbnails_of(path)] == ["primary"] * 3


def test_a_corrupt_thumbnail_falls_back_to_the_primary(tmp_path: Path) -> None:
    data = heic(primary_probe(), thumbnail_probe())
    offset, length = thumbnail_extent(data)
    junk = bytes((i * 37 + 11) % 256 for i in range(length))
    path = write(tmp_path / "photo.heic", data[:offset] + junk + data[offset + length :])
    assert [came_from(im) for im in thumbnails_of(path)] == ["primary"] * 3


def test_a_file_without_a_thumbnail_is_decoded_in_full(tmp_path: Path) -> None:
    path = write(tmp_path / "photo.heic", heic(primary_probe(), None))
    assert [came_from(im) for im in thumbnails_of(path)] == ["primary"] * 3


# --------------------------------------------------------------------------------------------
# Colour and metadata: the primary's


def rendered(path: Path, spec: RenderSpec) -> RenderResult:
    result = render(str(path), spec)
    assert result.error is None, result.error
    return result


def test_the_primarys_colour_applies_to_its_thumbnail(tmp_path: Path) -> None:
    """A BT.2020 primary (nclx): the thumbnail (no colour box of its own) is converted the same
    way as a full decode is."""
    teal = (40, 160, 140)
    data = heic(Image.new("RGB", UPRIGHT, teal), Image.new("RGB", UPRIGHT, teal), primaries=9)
    path = write(tmp_path / "wide.heic", data)
    fast = rendered(path, RenderSpec(widths=(200,))).thumbnails[0]  # from the thumbnail
    full = rendered(path, RenderSpec(widths=(400,))).thumbnails[0]  # from the primary
    fast_rgb = Image.open(io.BytesIO(fast.data)).convert("RGB").getpixel((100, 60))
    full_rgb = Image.open(io.BytesIO(full.data)).convert("RGB").getpixel((200, 120))
    assert isinstance(fast_rgb, tuple) and isinstance(full_rgb, tuple)
    assert all(abs(a - b) <= 6 for a, b in zip(fast_rgb, full_rgb, strict=True))
    # Converted: BT.2020's teal is more saturated than the same numbers in sRGB.
    assert max(abs(a - b) for a, b in zip(fast_rgb, teal, strict=True)) > 15, fast_rgb


def test_a_thumbnail_with_a_colour_profile_of_its_own_is_not_the_primarys() -> None:
    # libheif writes thumbnails without a colour box, so this rule is checked on its own.
    nclx = {"color_primaries": 9}
    assert heif._same_colour({}, {"nclx_profile": nclx})
    assert heif._same_colour({"nclx_profile": nclx}, {"nclx_profile": nclx})
    assert not heif._same_colour({"nclx_profile": {"color_primaries": 1}}, {"nclx_profile": nclx})
    assert not heif._same_colour({"icc_profile": b"other"}, {"icc_profile": b"mine"})
    assert not heif._same_colour({"icc_profile": b"mine"}, {"nclx_profile": nclx})


def test_the_primarys_metadata_is_what_is_kept(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x013B] = "A. Photographer"  # Artist
    path = probe_file(tmp_path, exif=exif.tobytes())
    result = rendered(path, RenderSpec(widths=(200,), keep_metadata=("artist",)))
    im = Image.open(io.BytesIO(result.thumbnails[0].data))
    assert came_from(im.convert("RGB")) == "thumbnail"
    assert im.getexif().get(0x013B) == "A. Photographer"
    plain = Image.open(io.BytesIO(rendered(path, RenderSpec(widths=(200,))).thumbnails[0].data))
    assert not plain.getexif()


def test_the_index_names_the_primarys_size(tmp_path: Path) -> None:
    import json

    path = probe_file(tmp_path)
    result = rendered(path, RenderSpec(index=True))
    assert result.index is not None
    source = json.loads(result.index)["source"]
    assert (source["width"], source["height"]) == UPRIGHT
