"""render(): real files in, thumbnails (or a clear error) out."""

from __future__ import annotations

import io
import math
import os
import pickle
import random
import warnings
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms, ImageOps, ImageStat, JpegImagePlugin, PngImagePlugin

from tests import images
from thumbd.render.pipeline import ALLOWED_FORMATS, render
from thumbd.render.spec import RenderResult, RenderSpec, Thumbnail

Size = tuple[int, int]

SPEC = RenderSpec()  # widths (200, 64, 32)


def run(path: Path, spec: RenderSpec = SPEC) -> RenderResult:
    return render(str(path), spec)


def ok(path: Path, spec: RenderSpec = SPEC) -> RenderResult:
    result = run(path, spec)
    assert result.error is None, result.error
    assert result.ok
    return result


def decode(thumb: Thumbnail) -> Image.Image:
    """Open a thumbnail's bytes, checking its format matches its extension and size."""
    im = Image.open(io.BytesIO(thumb.data))
    assert im.format == {"jpg": "JPEG", "png": "PNG"}[thumb.ext]
    assert im.size == thumb.size
    im.load()
    return im


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    mse = sum(ImageStat.Stat(diff).sum2) / (3 * a.size[0] * a.size[1])
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def full_decode_reference(path: Path, size: tuple[int, int]) -> Image.Image:
    """The slow, obviously right thumbnail: full decode, upright, one LANCZOS resize."""
    full = ImageOps.exif_transpose(Image.open(path).convert("RGB"))
    return full.resize(size, Image.Resampling.LANCZOS)


def assert_no_metadata(im: Image.Image) -> None:
    assert not im.getexif()
    for key in ("exif", "comment", "icc_profile", "xmp", "XML:com.adobe.xmp"):
        assert key not in im.info


# --------------------------------------------------------------------------------------------
# Sizes


def test_one_thumbnail_per_width_in_the_given_order(tmp_path: Path) -> None:
    src = images.make_jpeg(tmp_path / "a.jpg", (640, 480))
    result = ok(src, RenderSpec(widths=(200, 64, 1000, 32, 640)))

    assert result.source_size == (640, 480)
    assert [t.width for t in result.thumbnails] == [200, 64, 1000, 32, 640]
    assert [t.size for t in result.thumbnails] == [
        (200, 150),
        (64, 48),
        (640, 480),  # never upscaled, still named after its width
        (32, 24),
        (640, 480),  # equal to the source: the source size
    ]
    for thumb in result.thumbnails:
        assert decode(thumb).size == thumb.size


@pytest.mark.parametrize(
    ("source", "width", "expected"),
    [
        ((300, 200), 100, (100, 67)),  # 66.67 rounds up, not down
        ((300, 100), 100, (100, 33)),  # 33.33 rounds down
        ((333, 100), 200, (200, 60)),
        ((1000, 2), 100, (100, 1)),  # 0.2 would be 0: at least 1
        ((200, 600), 64, (64, 192)),  # portrait
        ((120, 90), 200, (120, 90)),  # narrower than the width: own size
    ],
)
def test_height_is_rounded_and_never_upscaled(
    tmp_path: Path, source: tuple[int, int], width: int, expected: tuple[int, int]
) -> None:
    src = tmp_path / "a.png"
    images.natural(source).save(src)
    (thumb,) = ok(src, RenderSpec(widths=(width,))).thumbnails
    assert thumb.width == width
    assert thumb.size == expected


# --------------------------------------------------------------------------------------------
# Orientation


ORIENTED_FORMATS = ["JPEG", "MPO", "PNG", "WEBP", "TIFF"]
if "AVIF" in ALLOWED_FORMATS:
    ORIENTED_FORMATS.append("AVIF")
if "HEIF" in ALLOWED_FORMATS:  # pillow-heif turns the tag into HEIF's own rotation on save
    ORIENTED_FORMATS.append("HEIF")


@pytest.mark.parametrize("fmt", ORIENTED_FORMATS)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_comes_out_upright(tmp_path: Path, fmt: str, orientation: int) -> None:
    src = images.make_orientation_probe(tmp_path / f"probe.{fmt.lower()}", orientation, fmt)
    result = ok(src, RenderSpec(widths=(160, 32, 400)))

    assert result.source_size == images.PROBE_SIZE  # upright, even when stored sideways
    assert [t.size for t in result.thumbnails] == [(160, 100), (32, 20), images.PROBE_SIZE]
    for thumb in result.thumbnails:
        im = decode(thumb)
        assert images.is_upright(im), f"orientation {orientation}, width {thumb.width}"
        assert_no_metadata(im)


def test_probe_helper_tells_orientations_apart() -> None:
    # Guards the test above: is_upright must reject every wrong way round.
    upright = images.upright_probe()
    assert images.is_upright(upright)
    for method in images.UPRIGHT_TRANSPOSE.values():
        if method is not None:
            assert not images.is_upright(upright.transpose(method)), method


def test_metadata_is_not_copied(tmp_path: Path) -> None:
    src = tmp_path / "meta.jpg"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "Camera Maker"
    images.natural((400, 300)).save(
        src, "JPEG", exif=exif.tobytes(), comment=b"secret comment", icc_profile=icc
    )
    for thumb in ok(src).thumbnails:
        assert_no_metadata(decode(thumb))
        assert b"secret comment" not in thumb.data
        assert b"Camera Maker" not in thumb.data


# --------------------------------------------------------------------------------------------
# Modes and output formats


def pixel(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = im.getpixel(xy)
    assert isinstance(value, tuple)
    return tuple(int(v) for v in value)


def mean(im: Image.Image) -> float:
    stat = ImageStat.Stat(im.convert("L"))
    return float(stat.mean[0])


@pytest.mark.parametrize(
    ("mode", "fmt", "ext", "out_mode"),
    [
        ("1", "PNG", "jpg", "L"),
        ("1", "BMP", "jpg", "L"),
        ("L", "PNG", "jpg", "L"),
        ("P", "PNG", "jpg", "RGB"),
        ("P", "BMP", "jpg", "RGB"),
        ("LA", "PNG", "png", "LA"),
        ("RGB", "PNG", "jpg", "RGB"),
        ("RGB", "WEBP", "jpg", "RGB"),
        ("RGB", "BMP", "jpg", "RGB"),
        ("RGB", "TIFF", "jpg", "RGB"),
        ("RGBA", "PNG", "png", "RGBA"),
        ("RGBA", "WEBP", "png", "RGBA"),
        ("RGBA", "TIFF", "png", "RGBA"),
        ("CMYK", "JPEG", "jpg", "RGB"),
        ("CMYK", "TIFF", "jpg", "RGB"),
        ("I;16", "PNG", "jpg", "L"),
        ("I;16", "TIFF", "jpg", "L"),
        ("I;16B", "TIFF", "jpg", "L"),
        ("I", "TIFF", "jpg", "L"),
        ("F", "TIFF", "jpg", "L"),
    ],
)
def test_each_mode_gives_the_right_format_and_sane_pixels(
    tmp_path: Path, mode: str, fmt: str, ext: str, out_mode: str
) -> None:
    src = images.make_image(tmp_path / f"src.{fmt.lower()}", mode, fmt)
    result = ok(src)
    assert result.source_size == (400, 300)
    for thumb in result.thumbnails:
        im = decode(thumb)
        assert (thumb.ext, im.mode) == (ext, out_mode), thumb.width
        # Real content: neither black, nor white, nor flat.
        lo, hi = im.convert("L").getextrema()
        assert isinstance(lo, int) and isinstance(hi, int)
        assert hi - lo > 100, (lo, hi)
        assert 30 < mean(im) < 225


@pytest.mark.parametrize(
    ("mode", "fmt"), [("I;16", "PNG"), ("I;16B", "TIFF"), ("I;16", "TIFF"), ("I", "TIFF")]
)
def test_16_bit_is_scaled_not_clipped(tmp_path: Path, mode: str, fmt: str) -> None:
    # A ramp 0..65535 must become 0..255; clipping (Pillow's convert("L")) makes it white.
    src = images.make_image(tmp_path / f"ramp.{fmt.lower()}", mode, fmt, size=(512, 64))
    (thumb,) = ok(src, RenderSpec(widths=(256,))).thumbnails
    im = decode(thumb)
    y = im.height // 2
    samples = [im.getpixel((x, y)) for x in (2, 64, 128, 192, 253)]
    expected = [2, 64, 128, 192, 253]  # value/256 of the 16-bit ramp at those points
    for got, want in zip(samples, expected, strict=True):
        assert isinstance(got, int)
        assert abs(got - want) <= 4, (samples, expected)


def test_float_image_in_0_to_1_is_stretched_to_0_to_255(tmp_path: Path) -> None:
    src = tmp_path / "f.tiff"
    ramp = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((256, 32))
    ramp.convert("F").point(lambda v: v / 255).save(src)  # 0.0 at the left, 1.0 at the right
    (thumb,) = ok(src, RenderSpec(widths=(256,))).thumbnails
    im = decode(thumb)
    left, right = im.getpixel((2, 16)), im.getpixel((253, 16))
    assert isinstance(left, int) and isinstance(right, int)
    assert left < 15 and right > 240


def test_alpha_is_kept_as_png(tmp_path: Path) -> None:
    src = images.make_png_alpha(tmp_path / "a.png", (400, 300))
    for thumb in ok(src).thumbnails:
        im = decode(thumb)
        assert (thumb.ext, im.mode) == ("png", "RGBA")
        w, h = im.size
        assert pixel(im, (0, 0))[3] == 0
        assert pixel(im, (w // 2, h // 2))[3] == 255


def test_fully_opaque_alpha_becomes_jpeg(tmp_path: Path) -> None:
    src = images.make_png_alpha(tmp_path / "a.png", (400, 300), opaque=True)
    for thumb in ok(src).thumbnails:
        assert (thumb.ext, decode(thumb).mode) == ("jpg", "RGB")


def test_palette_transparency_becomes_alpha(tmp_path: Path) -> None:
    src = images.make_palette_gif(tmp_path / "t.gif", (300, 200), transparent=True)
    (thumb,) = ok(src, RenderSpec(widths=(150,))).thumbnails
    im = decode(thumb)
    assert (thumb.ext, im.mode) == ("png", "RGBA")
    assert pixel(im, (10, 50))[3] == 0  # the transparent half
    assert pixel(im, (140, 50)) == (255, 0, 0, 255)


def test_colour_key_transparency_becomes_alpha(tmp_path: Path) -> None:
    src = tmp_path / "key.png"
    picture = Image.new("RGB", (300, 200), (0, 0, 255))
    picture.paste((0, 0, 0), (0, 0, 150, 200))  # left half black: the transparent colour
    picture.save(src, transparency=(0, 0, 0))
    (thumb,) = ok(src, RenderSpec(widths=(150,))).thumbnails
    im = decode(thumb)
    assert (thumb.ext, im.mode) == ("png", "RGBA")
    assert pixel(im, (10, 50))[3] == 0
    assert pixel(im, (140, 50)) == (0, 0, 255, 255)


def test_palette_without_transparency_is_jpeg(tmp_path: Path) -> None:
    src = images.make_palette_gif(tmp_path / "o.gif", transparent=False)
    (thumb,) = ok(src, RenderSpec(widths=(150,))).thumbnails
    assert (thumb.ext, decode(thumb).mode) == ("jpg", "RGB")


def test_palette_with_alpha_mode_pa() -> None:
    # Pillow writes no file format in mode PA, so test the conversion step directly.
    from thumbd.render.decoders.pillow import renderable as _renderable

    im = _renderable(images.in_mode("PA"))
    assert im.mode == "RGBA"
    assert im.getchannel("A").getextrema() == (0, 255)


def test_mpo_renders_its_first_frame(tmp_path: Path) -> None:
    src = images.make_mpo(tmp_path / "stereo.mpo", (400, 300))
    (thumb,) = ok(src, RenderSpec(widths=(200,))).thumbnails
    assert thumb.ext == "jpg"
    reference = full_decode_reference(src, thumb.size)  # Image.open shows frame 0 first
    assert psnr(decode(thumb), reference) >= 35


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    src = images.make_palette_gif(tmp_path / "anim.gif", transparent=False, frames=3)
    (thumb,) = ok(src, RenderSpec(widths=(100,))).thumbnails
    r, g, _ = pixel(decode(thumb), (90, 30))
    assert r > 200 and g < 50  # frame 0 is red there, later frames green


def test_animated_webp_uses_the_first_frame(tmp_path: Path) -> None:
    src = images.make_animated_webp(tmp_path / "anim.webp")
    (thumb,) = ok(src, RenderSpec(widths=(100,))).thumbnails
    r, g, _ = pixel(decode(thumb), (50, 30))
    assert r > 200 and g < 50


# --------------------------------------------------------------------------------------------
# Quality and the JPEG draft


@pytest.fixture(scope="module")
def big_jpegs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """A 2400x1800 photo-like JPEG, stored plain and rotated (orientation 6)."""
    folder = tmp_path_factory.mktemp("big")
    picture = images.natural((2400, 1800))
    return {
        1: images.make_jpeg(folder / "o1.jpg", image=picture),
        6: images.make_jpeg(
            folder / "o6.jpg", image=picture.transpose(Image.Transpose.ROTATE_90), orientation=6
        ),
    }


@pytest.fixture(scope="module")
def upright_phone_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phone photo taken upright, at a quarter of the pixels: stored 2016x1512, orientation
    6, so 1512 px wide upright; 1/4 scale gives 378 px, 1.89 times a 200 px thumbnail."""
    folder = tmp_path_factory.mktemp("phone")
    picture = images.natural((1512, 2016), seed=3)
    return images.make_jpeg(
        folder / "portrait.jpg", image=picture.transpose(Image.Transpose.ROTATE_90), orientation=6
    )


@pytest.mark.parametrize(
    ("photo", "widths", "upright"),
    [
        ("o1", (400, 200, 64), (2400, 1800)),
        ("o6", (400, 200, 64), (2400, 1800)),
        ("portrait", (200, 64, 32), (1512, 2016)),
    ],
)
def test_drafted_thumbnail_looks_like_a_full_decode(
    big_jpegs: dict[int, Path],
    upright_phone_jpeg: Path,
    photo: str,
    widths: tuple[int, ...],
    upright: tuple[int, int],
) -> None:
    src = upright_phone_jpeg if photo == "portrait" else big_jpegs[int(photo[1])]
    result = ok(src, RenderSpec(widths=widths))
    assert result.source_size == upright
    for thumb in result.thumbnails:
        reference = full_decode_reference(src, thumb.size)
        got = decode(thumb)
        if thumb.width >= 200:
            assert psnr(got, reference) >= 35, thumb.width
        # Whatever the size, draft and cascade must cost nothing next to the JPEG encoding
        # itself: compare with the reference put through the same encoder.
        buf = io.BytesIO()
        reference.save(buf, "JPEG", quality=RenderSpec().quality, optimize=True)
        ideal = psnr(Image.open(buf), reference)
        assert psnr(got, reference) >= ideal - 1.0, (thumb.width, ideal)


def spy_on_draft(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Size | None, Size]]:
    """(size asked for, size decoded) of every JPEG draft. A spy, not a fake: the real draft
    still runs, so the output is checked as usual."""
    calls: list[tuple[Size | None, Size]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(
        self: JpegImagePlugin.JpegImageFile, mode: str | None, size: Size | None
    ) -> tuple[str, tuple[int, int, float, float]] | None:
        assert self.tile, "draft after pixels were loaded does nothing"
        drafted = real_draft(self, mode, size)
        calls.append((size, self.size))
        return drafted

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


@pytest.mark.parametrize(
    ("orientation", "expected"),
    # stored 2400x1800 / 1800x2400, largest width 200: 1.8 times, then the scale that gives
    # at least that (1/4: 600x450)
    [(1, ((360, 270), (600, 450))), (6, ((270, 360), (450, 600)))],
)
def test_draft_asks_for_the_largest_width_with_a_margin_in_stored_orientation(
    big_jpegs: dict[int, Path],
    monkeypatch: pytest.MonkeyPatch,
    orientation: int,
    expected: tuple[Size, Size],
) -> None:
    calls = spy_on_draft(monkeypatch)
    result = ok(big_jpegs[orientation], RenderSpec(widths=(64, 200, 32)))
    assert calls == [expected]
    assert [t.size for t in result.thumbnails] == [(64, 48), (200, 150), (32, 24)]


def test_an_upright_phone_photo_decodes_at_the_scale_just_under_twice_the_width(
    upright_phone_jpeg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1512 px wide upright: 1/4 gives 378 px for a 200 px thumbnail (1.89x), not 1/2 (756).
    calls = spy_on_draft(monkeypatch)
    result = ok(upright_phone_jpeg, RenderSpec(widths=(200, 64, 32)))
    assert calls == [((480, 360), (504, 378))]
    assert [t.size for t in result.thumbnails] == [(200, 267), (64, 85), (32, 43)]


# --------------------------------------------------------------------------------------------
# Refusals: clear errors, never exceptions


def test_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    src = images.make_jpeg(tmp_path / "a.jpg", (640, 480))
    result = run(src, RenderSpec(max_pixels=640 * 480 - 1))
    assert result.error == "too large: 640x480 pixels exceeds max_pixels 307199"
    assert result.thumbnails == ()
    assert ok(src, RenderSpec(max_pixels=640 * 480)).thumbnails  # the limit itself is fine


def test_header_claiming_huge_size_is_refused(tmp_path: Path) -> None:
    # The header says 20000x20000; there are no pixels, so only an early refusal passes.
    src = images.make_png_header(tmp_path / "huge.png", (20000, 20000))
    result = run(src)
    assert result.error == "too large: 400000000 pixels exceeds max_pixels 100000000"
    src = images.make_png_header(tmp_path / "wide.png", (30000, 1000))
    assert run(src, RenderSpec(max_pixels=10**6)).error == (
        "too large: 30000x1000 pixels exceeds max_pixels 1000000"
    )


def test_pillow_bomb_warning_is_an_error_without_changing_global_warnings(
    tmp_path: Path,
) -> None:
    # 90 M pixels: under max_pixels, over Pillow's warning threshold (89,478,485).
    src = images.make_png_header(tmp_path / "bomb.png", (10000, 9000))
    filters_before = list(warnings.filters)
    result = run(src, RenderSpec(max_pixels=10**9))
    assert result.error is not None
    assert result.error.startswith("too large: 90000000 pixels exceeds Pillow's")
    assert warnings.filters == filters_before


@pytest.mark.parametrize(
    ("height", "spec", "error"),
    [
        (65501, RenderSpec(), "too large for JPEG: a 1x65501 thumbnail exceeds its 65500 "),
        (16384, RenderSpec(format="webp"), "too large for WebP: a 1x16384 thumbnail exceeds"),
        (16384, RenderSpec(format="webp", animated=True), "too large for WebP: a 1x16384 "),
    ],
)
def test_long_strip_too_tall_for_the_output_format_is_a_clear_failure(
    tmp_path: Path, height: int, spec: RenderSpec, error: str
) -> None:
    # Never upscaled: a source narrower than every width keeps its height, which can be more
    # than the encoder can store (libjpeg 65500, libwebp 16383 pixels a side).
    src = tmp_path / "strip.gif"
    frames = [Image.new("RGB", (1, height), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100)
    result = run(src, spec)
    assert result.error is not None and result.error.startswith(error), result.error
    assert result.thumbnails == ()
    ok(src, RenderSpec(format="png"))  # PNG has no such limit


@pytest.mark.parametrize("key", ["XML:com.adobe.xmp", "Raw profile type xmp", "workflow"])
def test_png_with_megabytes_of_compressed_metadata_is_thumbnailed(tmp_path: Path, key: str) -> None:
    # Photoshop's XMP history (DocumentAncestors), ImageMagick's hex "Raw profile" chunks and
    # image generators' workflows reach megabytes; compressed, Pillow's default refuses any text
    # chunk over 1 MB decompressed, which failed the whole picture.
    text = "".join(f"<rdf:li>xmp.did:{i:032x}</rdf:li>\n" for i in range(60_000))  # 3 MB
    info = PngImagePlugin.PngInfo()
    if key.startswith("XML"):
        info.add_itxt(key, text, zip=True)
    else:
        info.add_text(key, text, zip=True)
    src = tmp_path / "big-metadata.png"
    images.natural((320, 240)).save(src, pnginfo=info)
    result = ok(src, RenderSpec(widths=(100,)))
    assert result.thumbnails[0].size == (100, 75)
    assert b"xmp.did" not in result.thumbnails[0].data


def test_png_text_chunk_bomb_is_still_refused(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * (65 << 20), zip=True)  # 65 MB of text in 65 KB
    src = tmp_path / "text-bomb.png"
    Image.new("RGB", (8, 8)).save(src, pnginfo=info)
    result = run(src)
    assert result.error == "too large: PNG text chunks (metadata) over 64 MB decompressed"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "BMP"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    src = images.make_truncated(tmp_path / f"cut.{fmt.lower()}", fmt)
    assert run(src).error == "image file is truncated"


def test_truncated_jpeg_helper(tmp_path: Path) -> None:
    src = images.make_truncated_jpeg(tmp_path / "cut.jpg")
    assert run(src).error == "image file is truncated"


def test_truncated_webp_is_an_error_not_an_exception(tmp_path: Path) -> None:
    src = images.make_truncated(tmp_path / "cut.webp", "WEBP")
    result = run(src)
    assert result.error is not None and result.error.startswith("cannot decode image:")


def test_garbage(tmp_path: Path) -> None:
    result = run(images.make_garbage(tmp_path / "x.jpg"))
    assert result.error is not None
    assert result.error.startswith("cannot identify image file")
    assert result.thumbnails == () and result.source_size is None


def test_format_outside_the_allowed_list_is_not_decoded(tmp_path: Path) -> None:
    src = tmp_path / "x.ppm"
    images.natural((64, 48)).save(src, "PPM")  # Pillow reads PPM; thumbd must not
    assert "PPM" not in ALLOWED_FORMATS
    error = run(src).error
    assert error is not None and error.startswith("cannot identify image file")


FUZZED_FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"]
if "AVIF" in ALLOWED_FORMATS:
    FUZZED_FORMATS.append("AVIF")


@pytest.mark.parametrize("fmt", FUZZED_FORMATS)
def test_damaged_files_give_errors_not_exceptions(tmp_path: Path, fmt: str) -> None:
    # Bytes overwritten at random (seeded) and files cut short: render() must return, with
    # thumbnails or with an error, never raise. Found AVIF's RuntimeError.
    picture = images.natural((96, 72))
    buf = io.BytesIO()
    (picture.quantize(32) if fmt == "GIF" else picture).save(buf, fmt)
    original = buf.getvalue()
    rng = random.Random(fmt)
    src = tmp_path / "damaged"
    for _ in range(40):
        data = bytearray(original)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        src.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and the like
            result = run(src)
        assert result.ok == (result.error is None)
        assert result.ok == bool(result.thumbnails)


def test_empty_file(tmp_path: Path) -> None:
    assert run(images.make_empty(tmp_path / "e.jpg")).error == "empty file (0 bytes)"


def test_missing_file(tmp_path: Path) -> None:
    result = run(tmp_path / "gone.jpg")
    assert result.error is not None and result.error.startswith("file not found")
    assert result.signature is None


def test_directory(tmp_path: Path) -> None:
    error = run(tmp_path).error
    assert error is not None and error.startswith("not a regular file")


def test_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert run(fifo).error == "not a regular file"


# --------------------------------------------------------------------------------------------
# Result contract


def test_signature_is_the_stat_of_the_file_read(tmp_path: Path) -> None:
    good = images.make_jpeg(tmp_path / "a.jpg", (320, 240))
    bad = images.make_garbage(tmp_path / "b.jpg")
    for path in (good, bad):
        st = os.stat(path)
        assert run(path).signature == (st.st_size, st.st_mtime_ns, st.st_ino)


def test_result_and_render_pickle(tmp_path: Path) -> None:
    for src in (
        images.make_jpeg(tmp_path / "a.jpg", (320, 240)),
        images.make_garbage(tmp_path / "b.jpg"),
    ):
        result = run(src)
        assert pickle.loads(pickle.dumps(result)) == result
    assert pickle.loads(pickle.dumps(render)) is render  # top level: a worker can import it
    assert pickle.loads(pickle.dumps(SPEC)) == SPEC


def test_cpu_seconds_is_measured(tmp_path: Path) -> None:
    result = ok(images.make_jpeg(tmp_path / "a.jpg", (640, 480)))
    assert 0.0 <= result.cpu_seconds < 60
    assert isinstance(result.cpu_seconds, float)


MOTION_XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:GCamera="http://ns.google.com/photos/1.0/camera/" GCamera:MotionPhoto="1" '
    b'GCamera:MotionPhotoVersion="1"/></rdf:RDF></x:xmpmeta>'
)


def test_an_android_motion_photo_is_a_still_marked_in_the_index(tmp_path: Path) -> None:
    import json

    from PIL import Image

    src = tmp_path / "PXL_1.MP.jpg"
    Image.new("RGB", (300, 200), "red").save(src, xmp=MOTION_XMP)
    with src.open("ab") as f:  # the clip appended after the JPEG, as the camera writes it
        f.write(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(200))
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (300, 200), "red").save(plain)
    marked = run(src, RenderSpec(index=True))
    assert marked.error is None and marked.thumbnails[0].size == (200, 133)
    assert marked.index is not None
    assert json.loads(marked.index)["source"]["motion_photo"] is True
    unmarked = run(plain, RenderSpec(index=True))
    assert unmarked.index is not None
    assert "motion_photo" not in json.loads(unmarked.index)["source"]
