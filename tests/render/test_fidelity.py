"""Image fidelity: colour management, formats, transparency, metadata, animation, sizes, index.

Each section proves one acceptance item of the fidelity issue on images made here. Colour
references are computed independently with LittleCMS (ImageCms.profileToProfile on the full
image, then a plain resize), and compared in CIELAB (Delta E 1976).
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms, ImageFilter, ImageOps, ImageSequence, ImageStat

from tests import images
from thumbd.render import colour, icc, thumbhash
from thumbd.render.pipeline import ALLOWED_FORMATS, render
from thumbd.render.spec import NamedSize, RenderResult, RenderSpec, Thumbnail

FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF", "gif": "GIF"}
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def ok(path: Path, spec: RenderSpec) -> RenderResult:
    result = render(str(path), spec)
    assert result.error is None, result.error
    return result


def decode(thumb: Thumbnail) -> Image.Image:
    im = Image.open(io.BytesIO(thumb.data))
    assert im.format == FORMATS[thumb.ext]
    assert im.size == thumb.size
    im.load()
    return im


def rgb_at(im: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    value = im.convert("RGB").getpixel(xy)
    assert isinstance(value, tuple)
    r, g, b = value[:3]
    return int(r), int(g), int(b)


# --------------------------------------------------------------------------------------------
# Delta E


def _linear(c: float) -> float:
    c /= 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def lab(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """CIELAB (D65) of an sRGB colour."""
    r, g, b = (_linear(v) for v in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    return 116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))


def delta_e(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return math.dist(lab(a), lab(b))


def test_delta_e_helper() -> None:
    assert delta_e((255, 0, 0), (255, 0, 0)) == 0
    assert delta_e((0, 0, 0), (255, 255, 255)) == pytest.approx(100, abs=0.1)
    assert 1 < delta_e((200, 40, 40), (205, 40, 40)) < 3


# --------------------------------------------------------------------------------------------
# Acceptance 2: wide-gamut RGB is converted to sRGB


# A full-scale red is the same in all three (Adobe RGB shares sRGB's red primary; P3's and
# ProPhoto's lie outside sRGB and clip to it), so the patches that must differ from a naive
# reading are the saturated reds and greens below full scale.
PATCHES = [(255, 0, 0), (200, 40, 40), (60, 170, 60), (128, 128, 128)]
WIDE = {"adobe-rgb": icc.adobe_rgb, "display-p3": icc.display_p3, "prophoto": icc.prophoto_rgb}


def converted(
    colours: list[tuple[int, int, int]],
    profile: bytes,
    mode: str = "RGB",
    intent: ImageCms.Intent = ImageCms.Intent.PERCEPTUAL,
) -> list:
    """The LittleCMS reference: each colour converted from `profile` to sRGB on its own."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    out = []
    for c in colours:
        one = ImageCms.profileToProfile(
            Image.new(mode, (1, 1), c), source, SRGB, renderingIntent=intent, outputMode="RGB"
        )
        assert one is not None
        out.append(rgb_at(one, (0, 0)))
    return out


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("space", sorted(WIDE))
def test_wide_gamut_source_is_converted_to_srgb(tmp_path: Path, space: str, fmt: str) -> None:
    profile = WIDE[space]()
    src = tmp_path / f"wide.{fmt.lower()}"
    params = {"quality": 98, "subsampling": 0} if fmt == "JPEG" else {}
    images.stripes(PATCHES).save(src, fmt, icc_profile=profile, **params)
    (thumb,) = ok(src, RenderSpec(widths=(200,))).thumbnails
    im = decode(thumb)
    assert "icc_profile" not in im.info  # sRGB, untagged
    got = [rgb_at(im, xy) for xy in images.stripe_centres(im.size, len(PATCHES))]
    for patch, want, have in zip(PATCHES, converted(PATCHES, profile), got, strict=True):
        assert delta_e(have, want) < 2.5, (space, patch, have, want)
    # The saturated patches are visibly different from the bytes read as sRGB.
    assert max(delta_e(have, patch) for have, patch in zip(got[1:3], PATCHES[1:3], strict=True)) > 8


def test_adobe_rgb_red_differs_from_the_naive_reading(tmp_path: Path) -> None:
    src = tmp_path / "red.png"
    Image.new("RGB", (100, 100), (200, 40, 40)).save(src, icc_profile=icc.adobe_rgb())
    (thumb,) = ok(src, RenderSpec(widths=(50,))).thumbnails
    got = rgb_at(decode(thumb), (25, 25))
    (want,) = converted([(200, 40, 40)], icc.adobe_rgb())
    assert delta_e(got, want) < 1.5
    assert delta_e(got, (200, 40, 40)) > 10  # what a profile-blind thumbnailer shows


def test_palette_png_with_profile_is_converted(tmp_path: Path) -> None:
    src = tmp_path / "palette.png"
    images.stripes(PATCHES).quantize(8).save(src, icc_profile=icc.adobe_rgb())
    assert Image.open(src).mode == "P"
    (thumb,) = ok(src, RenderSpec(widths=(200,))).thumbnails
    im = decode(thumb)
    got = [rgb_at(im, xy) for xy in images.stripe_centres(im.size, len(PATCHES))]
    for want, have in zip(converted(PATCHES, icc.adobe_rgb()), got, strict=True):
        assert delta_e(have, want) < 2.5, (have, want)


def test_rgba_with_profile_keeps_alpha(tmp_path: Path) -> None:
    src = tmp_path / "alpha.png"
    im = Image.new("RGBA", (100, 100), (200, 40, 40, 255))
    im.paste((0, 0, 0, 0), (0, 0, 50, 100))
    im.save(src, icc_profile=icc.display_p3())
    (thumb,) = ok(src, RenderSpec(widths=(50,))).thumbnails
    out = decode(thumb)
    assert out.mode == "RGBA"
    assert out.getpixel((5, 25))[3] == 0  # type: ignore[index]
    (want,) = converted([(200, 40, 40)], icc.display_p3())
    assert delta_e(rgb_at(out, (40, 25)), want) < 1.5


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_grey_source_with_a_grey_profile_is_converted(tmp_path: Path, fmt: str) -> None:
    # Photoshop embeds a grey profile in every greyscale file it saves (Dot Gain 20 % by
    # default, or Gray Gamma 2.2); browsers apply it. Here a linear one: mid grey is far lighter.
    profile = icc.gray_profile("linear grey", icc.Gamma(1.0))
    src = tmp_path / f"grey.{fmt.lower()}"
    levels = [(40,), (128,), (220,)]
    images.stripes(levels, mode="L", size=(300, 100)).save(src, fmt, icc_profile=profile)
    for source_mode in ("L", "LA"):
        if source_mode == "LA":
            if fmt == "JPEG":
                continue
            with_alpha = Image.open(src).convert("LA")
            with_alpha.putpixel((0, 0), (0, 0))  # some transparency: the thumbnail keeps it
            with_alpha.save(src, icc_profile=profile)
        (thumb,) = ok(src, RenderSpec(widths=(150,))).thumbnails
        im = decode(thumb)
        assert im.mode == source_mode and "icc_profile" not in im.info
        got = [rgb_at(im, c) for c in images.stripe_centres(im.size, len(levels))]
        for want, have in zip(converted(levels, profile, mode="L"), got, strict=True):
            assert delta_e(have, want) < 1.5, (source_mode, have, want)
        assert got[1][0] > 170  # not the bytes read as sRGB (128)


def test_srgb_and_unreadable_profiles_cost_nothing_and_change_nothing(tmp_path: Path) -> None:
    srgb_bytes = SRGB.tobytes()
    picture = images.natural((400, 300))
    plain, tagged, broken = tmp_path / "plain.png", tmp_path / "tagged.png", tmp_path / "bad.png"
    picture.save(plain)
    picture.save(tagged, icc_profile=srgb_bytes)
    picture.save(broken, icc_profile=b"not a profile at all" * 10)
    assert colour.profile_to_convert(Image.open(tagged)) is None  # no transform is built
    assert colour.profile_to_convert(Image.open(broken)) is None  # ignored, not fatal
    reference = ok(plain, RenderSpec(widths=(200,))).thumbnails[0].data
    for src in (tagged, broken):
        assert ok(src, RenderSpec(widths=(200,))).thumbnails[0].data == reference


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("JPEG", "RGB"), ("PNG", "RGB"), ("JPEG", "L"), ("PNG", "L"), ("JPEG", "CMYK")],
)
def test_a_profile_with_a_damaged_header_is_ignored_not_fatal(
    tmp_path: Path, fmt: str, mode: str
) -> None:
    # Byte 16-19 of an ICC header name the colour space ("RGB ", "GRAY", "CMYK"); damaged, they
    # are not even ASCII, which made reading them raise and cost the picture.
    good = {"RGB": icc.display_p3, "L": lambda: icc.gray_profile("g", icc.Gamma(1.0))}.get(
        mode, lambda: icc.cmyk_profile("c")
    )()
    damaged = good[:16] + b"\xd7\x8f\xff\x01" + good[20:]
    src, plain = tmp_path / f"damaged.{fmt.lower()}", tmp_path / f"plain.{fmt.lower()}"
    picture = images.natural((200, 150)).convert(mode)
    picture.save(src, fmt, icc_profile=damaged)
    picture.save(plain, fmt)
    spec = RenderSpec(widths=(100,))
    assert ok(src, spec).thumbnails[0].data == ok(plain, spec).thumbnails[0].data  # as untagged


# --------------------------------------------------------------------------------------------
# Acceptance 2: CMYK with and without a profile, Adobe's inverted JPEGs


CMYK_PATCHES = [
    (0, 0, 0, 0),  # paper
    (255, 0, 0, 0),  # cyan
    (0, 255, 0, 0),  # magenta
    (0, 0, 255, 0),  # yellow
    (0, 0, 0, 255),  # black
    (128, 0, 0, 0),  # 50 % cyan
    (0, 255, 255, 0),  # red overprint
]

# An uncoated-paper printing condition: paler solids than the built-in coated one, so a
# profile that is honoured gives visibly different colours from the default.
UNCOATED = icc.Inks(
    paper=(95.0, 0.0, -2.0),
    c=(60.0, -26.0, -44.0),
    m=(56.0, 61.0, -2.0),
    y=(89.0, -4.0, 78.0),
    k=(31.0, 1.0, 1.0),
    my=(54.0, 55.0, 26.0),
    cy=(54.0, -37.0, 18.0),
    cm=(38.0, 12.0, -31.0),
    cmy=(36.0, 1.0, 1.0),
    darkest=(28.0, 0.0, 0.0),
    tone_gain=0.18,
)


# The built-in FOGRA39 profile is read relative colorimetric (what matches its measurements,
# tests/render/test_cmyk.py); a file's own profile perceptual.
BUILT_IN = ImageCms.Intent.RELATIVE_COLORIMETRIC


def cmyk_source(tmp_path: Path, kind: str) -> tuple[Path, bytes, ImageCms.Intent]:
    """A CMYK JPEG of the patches: (path, the profile and intent to read its colours with)."""
    picture = images.stripes(CMYK_PATCHES, "CMYK", (700, 100))
    path = tmp_path / f"{kind}.jpg"
    if kind == "adobe-inverted":  # what Photoshop writes, and Pillow too
        picture.save(path, "JPEG", quality=95)
        assert images.has_adobe_marker(path.read_bytes())
        return path, colour._default_cmyk(), BUILT_IN
    if kind == "plain":
        images.make_cmyk_plain_jpeg(path, picture)
        assert not images.has_adobe_marker(path.read_bytes())
        return path, colour._default_cmyk(), BUILT_IN
    profile = icc.cmyk_profile("uncoated test profile", UNCOATED)
    picture.save(path, "JPEG", quality=95, icc_profile=profile)
    return path, profile, ImageCms.Intent.PERCEPTUAL


@pytest.mark.parametrize("kind", ["adobe-inverted", "plain", "with-profile"])
def test_cmyk_jpeg_colours_match_the_reference(tmp_path: Path, kind: str) -> None:
    src, profile, intent = cmyk_source(tmp_path, kind)
    (thumb,) = ok(src, RenderSpec(widths=(350,))).thumbnails
    im = decode(thumb)
    assert im.mode == "RGB" and "icc_profile" not in im.info  # the CMYK profile is not kept
    got = [rgb_at(im, xy) for xy in images.stripe_centres(im.size, len(CMYK_PATCHES))]
    for patch, want, have in zip(
        CMYK_PATCHES, converted(CMYK_PATCHES, profile, "CMYK", intent), got, strict=True
    ):
        assert delta_e(have, want) < 3, (kind, patch, have, want)


def test_cmyk_without_profile_is_not_oversaturated(tmp_path: Path) -> None:
    # What ISO coated (FOGRA39) process inks look like on screen, as the widely published
    # sRGB equivalents give them: cyan #009FE3, magenta #E6007E, yellow #FFED00. Black is
    # published as #1D1D1B, which is black point compensation's: 100 % K measures L* 16 on
    # paper of L* 95 (FOGRA39L), #2B2B2A on screen relative to the paper.
    # The naive formula shows 100 % cyan as the screen's (0, 255, 255): ~40 off.
    src, _, _ = cmyk_source(tmp_path, "adobe-inverted")
    (thumb,) = ok(src, RenderSpec(widths=(350,))).thumbnails
    im = decode(thumb)
    paper, cyan, magenta, yellow, black, *_ = (
        rgb_at(im, xy) for xy in images.stripe_centres(im.size, len(CMYK_PATCHES))
    )
    assert delta_e(paper, (255, 255, 255)) < 2  # paper is white on screen
    assert delta_e(cyan, (0x00, 0x9F, 0xE3)) < 4, cyan
    assert delta_e(magenta, (0xE6, 0x00, 0x7E)) < 4, magenta
    assert delta_e(yellow, (0xFF, 0xED, 0x00)) < 4, yellow
    assert delta_e(black, (0x2B, 0x2B, 0x2A)) < 4, black
    naive = Image.new("CMYK", (1, 1), (255, 0, 0, 0)).convert("RGB").getpixel((0, 0))
    assert naive == (0, 255, 255) and delta_e(cyan, naive) > 30


def test_cmyk_with_profile_differs_from_the_default(tmp_path: Path) -> None:
    profiled, _, _ = cmyk_source(tmp_path, "with-profile")
    default, _, _ = cmyk_source(tmp_path, "adobe-inverted")
    spec = RenderSpec(widths=(350,))
    a, b = (decode(ok(p, spec).thumbnails[0]) for p in (profiled, default))
    centres = images.stripe_centres(a.size, len(CMYK_PATCHES))
    assert max(delta_e(rgb_at(a, xy), rgb_at(b, xy)) for xy in centres) > 10


def test_cmyk_tiff_is_converted_too(tmp_path: Path) -> None:
    src = tmp_path / "print.tif"
    images.stripes(CMYK_PATCHES, "CMYK", (700, 100)).save(src)
    (thumb,) = ok(src, RenderSpec(widths=(350,))).thumbnails
    im = decode(thumb)
    want = converted(CMYK_PATCHES, colour._default_cmyk(), "CMYK", BUILT_IN)
    for xy, expected in zip(images.stripe_centres(im.size, len(CMYK_PATCHES)), want, strict=True):
        assert delta_e(rgb_at(im, xy), expected) < 3


# --------------------------------------------------------------------------------------------
# Acceptance 3: 16-bit (see also test_render.test_16_bit_is_scaled_not_clipped)


def test_16_bit_png_gradient_keeps_its_full_range_in_every_format(tmp_path: Path) -> None:
    src = images.make_png16(tmp_path / "deep.png", (512, 64))
    for fmt in ("jpeg", "png", "webp"):
        (thumb,) = ok(src, RenderSpec(widths=(256,), format=fmt)).thumbnails
        lo, hi = decode(thumb).convert("L").getextrema()  # type: ignore[misc]
        assert lo < 10 and hi > 245, (fmt, lo, hi)


# --------------------------------------------------------------------------------------------
# Acceptance 4: transparency


def half_transparent(tmp_path: Path) -> Path:
    """A PNG whose every pixel is 50 % transparent red."""
    src = tmp_path / "half.png"
    Image.new("RGBA", (200, 100), (255, 0, 0, 128)).save(src)
    return src


@pytest.mark.parametrize("fmt", ["auto", "png", "webp", "avif"])
def test_half_transparency_is_kept(tmp_path: Path, fmt: str) -> None:
    if fmt == "avif" and "AVIF" not in ALLOWED_FORMATS:
        pytest.skip(reason="this Pillow has no AVIF support")
    (thumb,) = ok(half_transparent(tmp_path), RenderSpec(widths=(100,), format=fmt)).thumbnails
    im = decode(thumb)
    assert thumb.ext == {"auto": "png"}.get(fmt, fmt)
    r, g, b, a = im.convert("RGBA").getpixel((50, 25))  # type: ignore[misc]
    assert abs(a - 128) <= 3 and r > 230 and g < 25 and b < 25, (r, g, b, a)


@pytest.mark.parametrize(
    ("background", "expected"), [(None, (255, 127, 127)), ((0, 0, 128), (128, 0, 64))]
)
def test_forced_jpeg_composites_on_the_background(
    tmp_path: Path, background: tuple[int, int, int] | None, expected: tuple[int, int, int]
) -> None:
    spec = RenderSpec(widths=(100,), format="jpeg")
    if background is not None:
        spec = RenderSpec(widths=(100,), format="jpeg", background=background)
    (thumb,) = ok(half_transparent(tmp_path), spec).thumbnails
    im = decode(thumb)
    assert thumb.ext == "jpg" and im.mode == "RGB"
    got = rgb_at(im, (50, 25))
    assert delta_e(got, expected) < 3, got  # never black


# --------------------------------------------------------------------------------------------
# Acceptance 5: metadata


PRIVATE = (b"secret comment", b"secret-xmp-location", b"PhoneMaker", b"Jane Doe", b"Phone 15")


def assert_clean(thumb: Thumbnail) -> None:
    im = decode(thumb)
    assert not im.getexif(), thumb.ext
    for key in ("exif", "comment", "xmp", "XML:com.adobe.xmp", "icc_profile"):
        assert key not in im.info, (thumb.ext, key)
    for secret in PRIVATE:
        assert secret not in thumb.data, (thumb.ext, secret)


@pytest.mark.parametrize("fmt", ["auto", "jpeg", "png", "webp", "avif"])
def test_no_exif_gps_xmp_or_comment_by_default(tmp_path: Path, fmt: str) -> None:
    if fmt == "avif" and "AVIF" not in ALLOWED_FORMATS:
        pytest.skip(reason="this Pillow has no AVIF support")
    src = images.make_private_jpeg(tmp_path / "phone.jpg")
    assert Image.open(src).getexif().get_ifd(0x8825)  # the source does leak GPS
    spec = RenderSpec(widths=(200, 64), sizes=(NamedSize("sq", 50, 50, "cover"),), format=fmt)
    for thumb in ok(src, spec).thumbnails:
        assert_clean(thumb)


def test_animated_thumbnails_carry_no_comment(tmp_path: Path) -> None:
    src = images.make_animated_gif(tmp_path / "a.gif", [(255, 0, 0), (0, 255, 0)], [100, 100])
    with Image.open(src) as im:
        frames = [f.copy() for f in ImageSequence.Iterator(im)]
    frames[0].save(src, save_all=True, append_images=frames[1:], comment=b"secret comment")
    for thumb in ok(src, RenderSpec(widths=(100,), animated=True)).thumbnails:
        assert b"secret comment" not in thumb.data


def test_keep_metadata_keeps_only_what_is_asked(tmp_path: Path) -> None:
    src = images.make_private_jpeg(tmp_path / "phone.jpg")
    for fmt in ("jpeg", "png", "webp"):
        spec = RenderSpec(widths=(100,), keep_metadata=("copyright",), format=fmt)
        (thumb,) = ok(src, spec).thumbnails
        im = decode(thumb)
        exif = im.getexif()
        assert dict(exif) == {0x8298: "(c) Jane Doe"}, fmt
        assert not exif.get_ifd(0x8825)
        for secret in (b"secret comment", b"secret-xmp-location", b"PhoneMaker"):
            assert secret not in thumb.data, (fmt, secret)


def test_keep_metadata_gps_camera_comment_and_xmp(tmp_path: Path) -> None:
    src = images.make_private_jpeg(tmp_path / "phone.jpg")
    spec = RenderSpec(widths=(100,), keep_metadata=("gps", "camera", "comment", "xmp", "datetime"))
    (thumb,) = ok(src, spec).thumbnails
    im = decode(thumb)
    exif = im.getexif()
    assert exif[0x010F] == "PhoneMaker" and exif[0x0110] == "Phone 15"
    assert 0x8298 not in exif and 0x013B not in exif  # copyright and artist were not asked
    assert 0x0112 not in exif  # never an orientation: the pixels are upright
    assert exif.get_ifd(0x8825)[2] == images.GPS[2]
    assert exif.get_ifd(0x8769)[0x9003] == "2024:05:01 12:00:00"
    assert im.info["comment"] == b"secret comment"
    assert b"secret-xmp-location" in im.info["xmp"]


# What Lightroom and phones write: the orientation and the location in XMP too, as attributes
# or as elements.
XMP_TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF
 xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about=""
 xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:exif="http://ns.adobe.com/exif/1.0/"
 xmlns:dc="http://purl.org/dc/elements/1.1/" {attributes}>{elements}
 <dc:rights><rdf:Alt><rdf:li xml:lang="x-default">(c) Jane Doe</rdf:li></rdf:Alt></dc:rights>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""
XMP_AS_ATTRIBUTES = XMP_TEMPLATE.format(
    attributes='tiff:Orientation="6" exif:GPSLatitude="52,31.208N" exif:GPSLongitude="13,24.0E"',
    elements="",
)
XMP_AS_ELEMENTS = XMP_TEMPLATE.format(
    attributes="",
    elements="<tiff:Orientation>6</tiff:Orientation><exif:GPSLatitude>52,31.208N</exif:GPSLatitude>"
    "<exif:GPSLongitude>13,24.0E</exif:GPSLongitude>",
)


@pytest.mark.parametrize("xmp", [XMP_AS_ATTRIBUTES, XMP_AS_ELEMENTS], ids=["attrs", "elements"])
def test_kept_xmp_loses_its_orientation_and_its_location_unless_gps_is_kept(
    tmp_path: Path, xmp: str
) -> None:
    src = tmp_path / "phone.jpg"
    stored = images.upright_probe().transpose(Image.Transpose.ROTATE_90)  # orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(src, quality=95, exif=exif.tobytes(), xmp=xmp.encode())
    for keep, gps_kept in ((("xmp",), False), (("xmp", "gps"), True)):
        for fmt in ("jpeg", "webp"):
            spec = RenderSpec(widths=(160,), keep_metadata=keep, format=fmt)
            (thumb,) = ok(src, spec).thumbnails
            im = decode(thumb)
            assert images.is_upright(im)
            # Viewers that read the orientation from XMP (Pillow, photo managers) leave it so.
            assert im.getexif().get(0x0112) is None, (keep, fmt)
            assert images.is_upright(ImageOps.exif_transpose(im)), (keep, fmt)
            assert b"Orientation" not in thumb.data
            assert b"(c) Jane Doe" in thumb.data  # the rest of the XMP is kept
            assert (b"GPSLatitude" in thumb.data) is gps_kept, (keep, fmt)
            assert (b"GPSLongitude" in thumb.data) is gps_kept, (keep, fmt)


def test_kept_xmp_that_cannot_be_read_is_dropped(tmp_path: Path) -> None:
    src = tmp_path / "phone.jpg"
    broken = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><tiff:Orientation>6</x:xmpmeta>'
    images.natural((320, 240)).save(src, quality=90, xmp=broken)
    (thumb,) = ok(src, RenderSpec(widths=(100,), keep_metadata=("xmp",))).thumbnails
    assert "xmp" not in decode(thumb).info
    assert b"Orientation" not in thumb.data


# --------------------------------------------------------------------------------------------
# Acceptance 6: formats


needs_heif = pytest.mark.skipif("HEIF" not in ALLOWED_FORMATS, reason="pillow-heif missing")
needs_avif = pytest.mark.skipif("AVIF" not in ALLOWED_FORMATS, reason="no AVIF in Pillow")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        pytest.param("photo.HEIC", "HEIF", marks=needs_heif),
        pytest.param("photo.heif", "HEIF", marks=needs_heif),
        pytest.param("photo.avif", "AVIF", marks=needs_avif),
        ("photo.webp", "WEBP"),
        ("photo.TIFF", "TIFF"),
        ("photo.bmp", "BMP"),
        ("photo.JPG", "JPEG"),
        ("photo.png", "PNG"),
        ("photo.gif", "GIF"),
    ],
)
def test_every_input_format_is_thumbnailed(tmp_path: Path, name: str, fmt: str) -> None:
    picture = images.natural((640, 480))
    src = tmp_path / name
    if fmt == "HEIF":
        images.make_heif(src, picture)
    else:
        (picture.quantize(256) if fmt == "GIF" else picture).save(src, fmt)
    result = ok(src, RenderSpec(widths=(200, 64)))
    assert result.source_size == (640, 480)
    assert [t.size for t in result.thumbnails] == [(200, 150), (64, 48)]
    reference = picture.resize((200, 150), Image.Resampling.LANCZOS)
    got = decode(result.thumbnails[0]).convert("RGB")
    assert ImageStat.Stat(ImageChops.difference(got, reference)).mean < [12, 12, 12], fmt


@needs_heif
def test_heif_orientation_comes_out_upright(tmp_path: Path) -> None:
    for orientation in (1, 3, 6, 8):
        src = images.make_orientation_probe(tmp_path / f"o{orientation}.heic", orientation, "HEIF")
        (thumb,) = ok(src, RenderSpec(widths=(160,))).thumbnails
        im = decode(thumb)
        assert images.is_upright(im), orientation
        assert not im.getexif()


# The H.273 primaries as published (ITU-T H.273 table 2), independent of what thumbd reads.
NCLX_PRIMARIES = {
    12: icc.display_p3(),
    9: icc.rgb_profile(
        "BT.2020", (0.708, 0.292), (0.170, 0.797), (0.131, 0.046), icc.D65_XY, icc.SrgbCurve()
    ),
}


@needs_heif
@pytest.mark.parametrize("primaries", [12, 9], ids=["display-p3", "bt2020"])
def test_heif_with_wide_gamut_nclx_colour_is_converted_to_srgb(
    tmp_path: Path, primaries: int
) -> None:
    # HEIF states its colour space as an nclx box (H.273 code points) rather than an ICC profile
    # when libheif, Android or a converter wrote it: 12 is Display P3, 9 BT.2020; 13 the sRGB
    # curve. The pixels are in that gamut: read as sRGB they look dull.
    patches = [(200, 40, 40), (60, 170, 60), (128, 128, 128)]
    src = images.make_heif(
        tmp_path / "wide.heic",
        images.stripes(patches, size=(300, 100)),
        chroma=444,
        color_primaries=primaries,
        transfer_characteristics=13,
    )
    assert Image.open(src).info["nclx_profile"]["color_primaries"] == primaries
    (thumb,) = ok(src, RenderSpec(widths=(150,))).thumbnails
    im = decode(thumb)
    got = [rgb_at(im, c) for c in images.stripe_centres(im.size, len(patches))]
    for want, have in zip(converted(patches, NCLX_PRIMARIES[primaries]), got, strict=True):
        assert delta_e(have, want) < 2.5, (primaries, have, want)
    assert delta_e(got[0], patches[0]) > 8  # not the bytes read as sRGB


@needs_heif
def test_heif_with_srgb_or_unspecified_nclx_colour_is_left_alone(tmp_path: Path) -> None:
    for primaries in (1, 2):
        src = images.make_heif(
            tmp_path / f"p{primaries}.heic",
            Image.new("RGB", (100, 100), (200, 40, 40)),
            chroma=444,
            color_primaries=primaries,
            transfer_characteristics=13,
        )
        (thumb,) = ok(src, RenderSpec(widths=(50,))).thumbnails
        assert delta_e(rgb_at(decode(thumb), (25, 25)), (200, 40, 40)) < 1.5, primaries


@needs_heif
def test_multi_image_heif_uses_its_largest_image(tmp_path: Path) -> None:
    # The primary (first) image is a small red preview; the real picture is the second.
    small = Image.new("RGB", (96, 72), (255, 0, 0))
    big = Image.new("RGB", (800, 600), (0, 0, 255))
    src = images.make_heif(tmp_path / "burst.heic", small, extra=[big])
    result = ok(src, RenderSpec(widths=(200,)))
    assert result.source_size == (800, 600)
    r, _, b = rgb_at(decode(result.thumbnails[0]), (100, 75))
    assert b > 200 and r < 40


def test_multi_page_tiff_uses_its_largest_page(tmp_path: Path) -> None:
    small = Image.new("RGB", (80, 60), (255, 0, 0))
    big = Image.new("RGB", (800, 600), (0, 0, 255))
    src = tmp_path / "pages.tif"
    small.save(src, save_all=True, append_images=[big, small])
    result = ok(src, RenderSpec(widths=(200,)))
    assert result.source_size == (800, 600)
    r, _, b = rgb_at(decode(result.thumbnails[0]), (100, 75))
    assert b > 200 and r < 40


@pytest.mark.parametrize("fmt", ["webp", "avif", "png", "jpeg"])
def test_output_format_is_configurable(tmp_path: Path, fmt: str) -> None:
    if fmt == "avif" and "AVIF" not in ALLOWED_FORMATS:
        pytest.skip(reason="this Pillow has no AVIF support")
    src = images.make_jpeg(tmp_path / "a.jpg", (640, 480))
    spec = RenderSpec(widths=(200,), format=fmt)
    (thumb,) = ok(src, spec).thumbnails
    assert thumb.ext == {"jpeg": "jpg"}.get(fmt, fmt)
    reference = images.natural((640, 480)).resize((200, 150), Image.Resampling.LANCZOS)
    diff = ImageStat.Stat(ImageChops.difference(decode(thumb).convert("RGB"), reference)).mean
    assert max(diff) < 8, (fmt, diff)


def test_quality_per_format_and_progressive_jpeg(tmp_path: Path) -> None:
    src = images.make_jpeg(tmp_path / "a.jpg", (640, 480))

    def size(**kw: object) -> int:
        return len(ok(src, RenderSpec(widths=(300,), **kw)).thumbnails[0].data)  # type: ignore[arg-type]

    assert size(format="webp", webp_quality=30) < size(format="webp", webp_quality=95)
    assert size(quality=30) < size(quality=95)
    assert size(format="webp", quality=30) == size(format="webp", quality=95)  # quality is JPEG's
    (thumb,) = ok(src, RenderSpec(widths=(300,), progressive=True)).thumbnails
    assert decode(thumb).info.get("progressive") == 1
    (thumb,) = ok(src, RenderSpec(widths=(300,))).thumbnails
    assert not decode(thumb).info.get("progressive")


def test_unsupported_format_is_a_clear_failure(tmp_path: Path) -> None:
    src = tmp_path / "icon.HEIC"
    images.natural((64, 64)).save(src, "ICO")  # Pillow reads ICO; thumbd does not
    result = render(str(src), RenderSpec())
    assert result.error is not None and result.error.startswith("cannot identify image file")
    assert "HEIF" in result.error or "HEIF" not in ALLOWED_FORMATS  # the message lists what is


# --------------------------------------------------------------------------------------------
# Acceptance 7: animation


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
DURATIONS = [100, 250, 400]


def frames_of(thumb: Thumbnail) -> tuple[list[tuple[int, int, int]], list[int], object]:
    """(colour at the centre of each frame, durations, loop) of an animated thumbnail."""
    im = Image.open(io.BytesIO(thumb.data))
    colours, durations = [], []
    for frame in ImageSequence.Iterator(im):
        colours.append(rgb_at(frame, (frame.width // 2, frame.height // 2)))
        durations.append(int(frame.info["duration"]))
    return colours, durations, im.info.get("loop")


def test_animated_gif_gives_its_first_frame_by_default(tmp_path: Path) -> None:
    src = images.make_animated_gif(tmp_path / "a.gif", COLOURS, DURATIONS)
    (thumb,) = ok(src, RenderSpec(widths=(150,))).thumbnails
    assert thumb.ext == "jpg" and thumb.frames == 1
    assert delta_e(rgb_at(decode(thumb), (75, 50)), (255, 0, 0)) < 5


@pytest.mark.parametrize(("fmt", "ext"), [("auto", "gif"), ("webp", "webp")])
def test_animated_true_keeps_frames_durations_and_loop(tmp_path: Path, fmt: str, ext: str) -> None:
    src = images.make_animated_gif(tmp_path / "a.gif", COLOURS, DURATIONS, loop=0)
    spec = RenderSpec(
        widths=(150, 40), sizes=(NamedSize("sq", 32, 32, "cover"),), animated=True, format=fmt
    )
    result = ok(src, spec)
    for thumb in result.thumbnails:
        assert (thumb.ext, thumb.frames) == (ext, 3)
        colours, durations, loop = frames_of(thumb)
        assert durations == DURATIONS
        assert loop == 0  # forever, as the source
        for got, want in zip(colours, COLOURS, strict=True):
            assert delta_e(got, want) < 8, (thumb.label, colours)
    assert [t.size for t in result.thumbnails] == [(150, 100), (40, 27), (32, 32)]


def test_apng_fallback_image_is_not_a_frame(tmp_path: Path) -> None:
    # An APNG may carry a default image that is not part of the animation: what viewers
    # without APNG show (a poster, or "animation not supported"). Browsers play the frames
    # after it; Pillow lists it as frame 0.
    src = tmp_path / "a.png"
    poster, *frames = [Image.new("RGB", (150, 100), c) for c in [(255, 255, 255), *COLOURS]]
    poster.save(src, save_all=True, append_images=frames, duration=DURATIONS, default_image=True)
    assert Image.open(src).n_frames == 4
    (still,) = ok(src, RenderSpec(widths=(75,))).thumbnails
    assert delta_e(rgb_at(decode(still), (37, 25)), COLOURS[0]) < 5  # the first frame
    (animated,) = ok(src, RenderSpec(widths=(75,), animated=True)).thumbnails
    colours, durations, _ = frames_of(animated)
    assert animated.frames == 3 and durations == DURATIONS
    for got, want in zip(colours, COLOURS, strict=True):
        assert delta_e(got, want) < 8, colours


def test_animated_webp_stays_animated(tmp_path: Path) -> None:
    src = images.make_animated_webp(tmp_path / "a.webp")
    (thumb,) = ok(src, RenderSpec(widths=(100,), animated=True)).thumbnails
    colours, durations, _ = frames_of(thumb)
    assert thumb.ext == "webp" and len(colours) == 2 and durations == [100, 100]
    assert colours[0][0] > 200 and colours[1][1] > 200


def test_gif_played_once_stays_played_once(tmp_path: Path) -> None:
    src = images.make_animated_gif(tmp_path / "a.gif", COLOURS, DURATIONS, loop=None)
    (thumb,) = ok(src, RenderSpec(widths=(100,), animated=True)).thumbnails
    assert frames_of(thumb)[2] is None


# --------------------------------------------------------------------------------------------
# Acceptance 8: named sizes, fit, cover, attention, sharpening


def test_cover_fills_the_box_exactly_and_fit_stays_inside(tmp_path: Path) -> None:
    src = tmp_path / "pano.png"
    images.natural((4000, 1000)).save(src)
    spec = RenderSpec(
        widths=(300,),
        sizes=(
            NamedSize("avatar", 200, 200, "cover"),
            NamedSize("box", 200, 200, "fit"),
            NamedSize("tall", 100, 300, "cover"),
            NamedSize("wide", 500, 0, "width"),
        ),
    )
    result = ok(src, spec)
    by_label = {t.label: t for t in result.thumbnails}
    assert list(by_label) == ["300", "avatar", "box", "tall", "wide"]
    assert by_label["avatar"].size == (200, 200)
    assert by_label["box"].size == (200, 50)
    assert by_label["tall"].size == (100, 300)
    assert by_label["wide"].size == (500, 125)
    # The centre crop shows the middle of the picture.
    reference = ImageOps.fit(images.natural((4000, 1000)), (200, 200), Image.Resampling.LANCZOS)
    diff = ImageStat.Stat(ImageChops.difference(decode(by_label["avatar"]), reference)).mean
    assert max(diff) < 6


@pytest.mark.parametrize(
    ("source", "box", "expected"),
    [
        ((4000, 1000), (200, 200), (200, 50)),
        ((1000, 4000), (200, 200), (50, 200)),
        ((150, 100), (200, 200), (150, 100)),  # never upscaled
        ((640, 480), (200, 0), (200, 150)),  # no height: as wide as asked
    ],
)
def test_fit_stays_inside_the_box(
    tmp_path: Path, source: tuple[int, int], box: tuple[int, int], expected: tuple[int, int]
) -> None:
    src = tmp_path / "a.png"
    images.natural(source).save(src)
    (thumb,) = ok(src, RenderSpec(widths=(), sizes=(NamedSize("f", *box, "fit"),))).thumbnails
    assert thumb.size == expected


def test_cover_of_a_small_source_is_not_upscaled(tmp_path: Path) -> None:
    src = tmp_path / "small.png"
    images.natural((150, 100)).save(src)
    (thumb,) = ok(src, RenderSpec(widths=(), sizes=(NamedSize("c", 200, 200, "cover"),))).thumbnails
    assert thumb.size == (100, 100)  # the box's shape at the source's own scale


@pytest.mark.parametrize("orientation", range(1, 9))
def test_cover_crops_the_upright_picture(tmp_path: Path, orientation: int) -> None:
    upright = images.natural((480, 320))
    stored = upright
    method = images.STORE_TRANSPOSE[orientation]
    if method is not None:
        stored = upright.transpose(method)
    src = images.make_jpeg(tmp_path / "o.jpg", image=stored, orientation=orientation, quality=95)
    spec = RenderSpec(widths=(), sizes=(NamedSize("c", 120, 200, "cover"),))
    (thumb,) = ok(src, spec).thumbnails
    reference = ImageOps.fit(upright, (120, 200), Image.Resampling.LANCZOS)
    diff = ImageStat.Stat(ImageChops.difference(decode(thumb), reference)).mean
    assert max(diff) < 8, (orientation, diff)


def busy_corner(size: tuple[int, int], at: str) -> Image.Image:
    """A flat, dull picture with one colourful, detailed region at one end."""
    w, h = size
    im = Image.new("RGB", size, (120, 125, 130))
    detail = images.natural((h, h), seed=5).filter(ImageFilter.DETAIL)
    detail = Image.merge(
        "RGB",
        (detail.getchannel(0), detail.getchannel(1).point(lambda v: 255 - v), detail.getchannel(2)),
    )
    x = {"left": 0, "right": w - h, "centre": (w - h) // 2}[at]
    im.paste(
        detail, (x, 0) if w > h else (0, {"left": 0, "right": h - w, "centre": (h - w) // 2}[at])
    )
    return im


def energy(im: Image.Image) -> float:
    return float(ImageStat.Stat(im.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0])


def detail(im: Image.Image) -> float:
    return float(ImageStat.Stat(im.convert("L")).stddev[0])


@pytest.mark.parametrize("at", ["left", "right"])
def test_attention_crop_finds_the_interesting_region(tmp_path: Path, at: str) -> None:
    src = tmp_path / "scene.png"
    busy_corner((1200, 300), at).save(src)
    centre = NamedSize("centre", 200, 200, "cover")
    attention = NamedSize("attention", 200, 200, "cover", "attention")
    a, b = ok(src, RenderSpec(widths=(), sizes=(centre, attention))).thumbnails
    im = decode(b)
    assert im.size == (200, 200)
    assert detail(decode(a)) < 3 < 20 < detail(im)  # the centre crop is the dull middle
    # It is the busy region itself, from the side it is on.
    reference = busy_corner((1200, 300), at).crop(
        (0, 0, 300, 300) if at == "left" else (900, 0, 1200, 300)
    )
    diff = ImageStat.Stat(
        ImageChops.difference(im, reference.resize((200, 200), Image.Resampling.LANCZOS))
    ).mean
    assert max(diff) < 10


def test_attention_crop_works_vertically_and_on_rotated_sources(tmp_path: Path) -> None:
    upright = busy_corner((300, 1200), "right")  # the busy part at the bottom
    src = images.make_jpeg(
        tmp_path / "r.jpg",
        image=upright.transpose(Image.Transpose.ROTATE_90),
        orientation=6,
        quality=95,
    )
    spec = RenderSpec(widths=(), sizes=(NamedSize("a", 150, 150, "cover", "attention"),))
    (thumb,) = ok(src, spec).thumbnails
    im = decode(thumb)
    reference = upright.crop((0, 900, 300, 1200)).resize((150, 150), Image.Resampling.LANCZOS)
    assert max(ImageStat.Stat(ImageChops.difference(im, reference)).mean) < 12


def test_sharpen_only_after_a_large_downscale(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    images.natural((1600, 1200)).save(src)
    plain = ok(src, RenderSpec(widths=(200, 1000), format="png")).thumbnails
    sharp = ok(src, RenderSpec(widths=(200, 1000), format="png", sharpen=True)).thumbnails
    assert energy(decode(sharp[0])) > 1.05 * energy(decode(plain[0]))  # 1/8: sharpened
    assert sharp[1].data == plain[1].data  # 1000/1600 is a small downscale: left alone


# --------------------------------------------------------------------------------------------
# Acceptance 9: the index


def test_index_describes_every_thumbnail_and_its_thumbhash_decodes(tmp_path: Path) -> None:
    picture = images.natural((800, 600))
    src = tmp_path / "holiday.jpg"
    picture.save(src, quality=92)
    spec = RenderSpec(widths=(200, 64), sizes=(NamedSize("sq", 100, 100, "cover"),), index=True)
    result = ok(src, spec)
    assert result.index is not None
    index = json.loads(result.index)
    assert index["source"] == {"file": "holiday.jpg", "width": 800, "height": 600}
    assert index["thumbnails"] == [
        {
            "file": f"holiday_{t.label}.{t.ext}",
            "name": t.label,
            "width": t.size[0],
            "height": t.size[1],
            "bytes": len(t.data),
        }
        for t in result.thumbnails
    ]
    assert [e["file"] for e in index["thumbnails"]] == [
        "holiday_200.jpg",
        "holiday_64.jpg",
        "holiday_sq.jpg",
    ]
    hash_bytes = base64.b64decode(index["thumbhash"])
    assert 18 <= len(hash_bytes) <= 30
    w, h, rgba = thumbhash.decode(hash_bytes)
    assert abs(w / h - 4 / 3) < 0.2
    placeholder = Image.frombytes("RGBA", (w, h), rgba).convert("RGB")
    source_mean = ImageStat.Stat(picture).mean
    decoded_mean = ImageStat.Stat(placeholder).mean
    source_lab = lab(tuple(round(v) for v in source_mean))  # type: ignore[arg-type]
    assert math.dist(lab(tuple(round(v) for v in decoded_mean)), source_lab) < 6  # type: ignore[arg-type]
    avg = thumbhash.average_rgba(hash_bytes)
    assert math.dist(lab(tuple(round(v * 255) for v in avg[:3])), source_lab) < 6  # type: ignore[arg-type]
    assert index["dominant_colour"].startswith("#") and len(index["dominant_colour"]) == 7


def test_index_dominant_colour_and_alpha(tmp_path: Path) -> None:
    src = tmp_path / "logo.png"
    im = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    im.paste((20, 180, 40, 255), (50, 50, 250, 150))
    im.save(src)
    index = json.loads(ok(src, RenderSpec(widths=(100,), index=True)).index or b"")
    r, g, b = (int(index["dominant_colour"][i : i + 2], 16) for i in (1, 3, 5))
    assert delta_e((r, g, b), (20, 180, 40)) < 5  # transparent pixels do not count
    hash_bytes = base64.b64decode(index["thumbhash"])
    assert thumbhash.average_rgba(hash_bytes)[3] < 1.0  # the hash knows about the alpha


def test_no_index_unless_asked(tmp_path: Path) -> None:
    assert ok(images.make_jpeg(tmp_path / "a.jpg"), RenderSpec()).index is None


# --------------------------------------------------------------------------------------------
# The ICC writer the tests (and the CMYK default) rely on


def test_generated_profiles_match_the_published_primaries() -> None:
    # Display P3's green (0.265, 0.690) in sRGB is out of gamut: greener than sRGB's green can be.
    p3 = ImageCms.ImageCmsProfile(io.BytesIO(icc.display_p3()))
    assert ImageCms.getProfileDescription(p3).startswith("Display P3")
    # Adobe RGB and sRGB share the red and blue primaries and the white point.
    (red, blue, white) = converted([(255, 0, 0), (0, 0, 255), (255, 255, 255)], icc.adobe_rgb())
    assert delta_e(red, (255, 0, 0)) < 1 and delta_e(blue, (0, 0, 255)) < 1
    assert white == (255, 255, 255)
    # A mid grey in Adobe RGB (gamma 2.2) is a touch lighter in sRGB; ProPhoto's 1.8 even more.
    ((grey_a,),) = [converted([(128, 128, 128)], icc.adobe_rgb())]
    ((grey_p,),) = [converted([(128, 128, 128)], icc.prophoto_rgb())]
    assert 128 <= grey_a[0] <= 131 and grey_p[0] > grey_a[0] + 10
