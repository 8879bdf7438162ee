"""Camera RAW through LibRaw: DNG files written here, byte by byte, opened by the real rawpy.

DNG is TIFF: a directory of tags per image. The files have a Bayer mosaic (RGGB, 16-bit,
uncompressed) with the tags LibRaw needs to develop it (DNGVersion, CFA pattern, levels, a
colour matrix, the as-shot white), and optionally a tiny RGB thumbnail in IFD0 and a JPEG
preview in a SubIFD, as cameras and Adobe's converter write them.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageDraw

from thumbd.render import icc
from thumbd.render.decoders.raw import RAW_EXTENSIONS, RawRefused, develop
from thumbd.render.spec import FailKind, Failure

SENSOR = (256, 192)  # w, h: landscape, as sensors are
RED, GREEN = (220, 30, 30), (40, 160, 90)

# ---------------------------------------------------------------------------------------------
# A small TIFF/DNG writer

Tag = tuple[
    str, object
]  # (type, values): "B" byte, "A" ascii, "H" short, "I" long, "R"/"S" rational
_TYPES = {"B": (1, 1), "A": (2, 1), "H": (3, 2), "I": (4, 4), "R": (5, 8), "S": (10, 8)}


def _pack(kind: str, values: object) -> bytes:
    if kind == "A":
        assert isinstance(values, str)
        return values.encode() + b"\0"
    assert isinstance(values, list)
    if kind == "B":
        return bytes(values)
    if kind in ("H", "I"):
        return struct.pack(f"<{len(values)}{kind}", *values)
    fmt = "<ii" if kind == "S" else "<II"
    return b"".join(struct.pack(fmt, round(v * 10000), 10000) for v in values)


@dataclass
class Ifd:
    tags: dict[int, Tag]
    data: bytes = b""  # one strip
    subs: list[Ifd] = field(default_factory=list)


def tiff(ifd0: Ifd) -> bytes:
    """A little-endian TIFF of ifd0 and its SubIFDs (one level), each followed by its data."""
    order = [ifd0, *ifd0.subs]
    starts = [0] * len(order)
    for _ in range(2):  # the second pass knows every directory's offset
        out = bytearray(b"II*\0" + struct.pack("<I", 8))
        for i, ifd in enumerate(order):
            starts[i] = len(out)
            tags = dict(ifd.tags)
            if ifd is ifd0 and ifd.subs:
                tags[330] = ("I", starts[1:])
            if ifd.data:
                tags[273], tags[279] = ("I", [0]), ("I", [len(ifd.data)])
            out += _directory(len(out), tags, ifd.data)
            out += b"\0" * (len(out) & 1)
    return bytes(out)


def _directory(start: int, tags: dict[int, Tag], data: bytes) -> bytes:
    packed = {tag: _pack(kind, values) for tag, (kind, values) in tags.items()}
    extra_at = start + 2 + 12 * len(tags) + 4
    data_at = extra_at + sum(len(p) + (len(p) & 1) for p in packed.values() if len(p) > 4)
    if 273 in packed:
        packed[273] = struct.pack("<I", data_at)
    head, extra = bytearray(struct.pack("<H", len(tags))), bytearray()
    for tag in sorted(tags):
        code, size = _TYPES[tags[tag][0]]
        p = packed[tag]
        if len(p) <= 4:
            head += struct.pack("<HHI", tag, code, len(p) // size) + p.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, code, len(p) // size, extra_at + len(extra))
            extra += p + b"\0" * (len(p) & 1)
    return bytes(head + b"\0\0\0\0" + extra + data)


def mosaic(size: tuple[int, int] = SENSOR) -> bytes:
    """RGGB sensor values of a neutral scene under the as-shot white (0.5, 1, 0.7): dark on
    the left half, light on the right, and a bright top-left quarter to tell orientation."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    level = np.where(xx < w // 2, 600.0, 2400.0)
    level[: h // 2, : w // 2] = 3600.0
    gain = np.where(
        (yy % 2 == 0) & (xx % 2 == 0), 0.5, np.where((yy % 2 == 1) & (xx % 2 == 1), 0.7, 1.0)
    )
    return (level * gain).astype("<u2").tobytes()


def raw_tags(size: tuple[int, int] = SENSOR) -> dict[int, Tag]:
    w, h = size
    return {
        254: ("I", [0]),  # the main image
        256: ("I", [w]),
        257: ("I", [h]),
        258: ("H", [16]),
        259: ("H", [1]),
        262: ("H", [32803]),  # CFA
        277: ("H", [1]),
        278: ("I", [h]),
        284: ("H", [1]),
        33421: ("H", [2, 2]),
        33422: ("B", [0, 1, 1, 2]),  # R G / G B
        50714: ("H", [0]),  # BlackLevel
        50717: ("H", [4095]),  # WhiteLevel
    }


def camera_tags(orientation: int = 1) -> dict[int, Tag]:
    return {
        271: ("A", "Thumbd"),
        272: ("A", "Thumbd TestCam"),
        274: ("H", [orientation]),
        50706: ("B", [1, 4, 0, 0]),  # DNGVersion
        50708: ("A", "Thumbd TestCam"),
        # ColorMatrix1 (XYZ -> camera) of a real camera, under D65 (CalibrationIlluminant1 21).
        50721: ("S", [0.6722, -0.0635, -0.0963, -0.4287, 1.2460, 0.2028, -0.0908, 0.2162, 0.5668]),
        50778: ("H", [21]),
        50728: ("R", [0.5, 1.0, 0.7]),  # AsShotNeutral
    }


def preview_jpeg(size: tuple[int, int], **save: object) -> bytes:
    """A green picture with a red top-left quarter, as a JPEG."""
    im = Image.new("RGB", size, GREEN)
    ImageDraw.Draw(im).rectangle((0, 0, size[0] // 2 - 1, size[1] // 2 - 1), fill=RED)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **save)
    return camera_style(buf.getvalue())


def camera_style(jpeg: bytes) -> bytes:
    """The JPEG without Pillow's JFIF APP0, so EXIF (if any) comes first, as cameras write it.

    LibRaw hands a preview back with its own EXIF put in front (Make, Model, the RAW's
    orientation) unless the preview's first segment already is EXIF; so a JFIF-first test
    preview would lose its EXIF where a camera's keeps it.
    """
    if jpeg[2:4] == b"\xff\xe0":
        return jpeg[:2] + jpeg[4 + int.from_bytes(jpeg[4:6], "big") :]
    return jpeg


def jpeg_ifd(jpeg: bytes) -> Ifd:
    w, h = Image.open(io.BytesIO(jpeg)).size
    tags: dict[int, Tag] = {
        254: ("I", [1]),  # a reduced-resolution copy
        256: ("I", [w]),
        257: ("I", [h]),
        258: ("H", [8, 8, 8]),
        259: ("H", [7]),  # JPEG
        262: ("H", [6]),  # YCbCr
        277: ("H", [3]),
        278: ("I", [h]),
        284: ("H", [1]),
    }
    return Ifd(tags, jpeg)


def make_dng(
    path: Path,
    *,
    preview: bytes | None = None,
    thumbnail: bool = True,
    orientation: int = 1,
    sensor: bytes | None = None,
) -> Path:
    """A DNG. With `thumbnail`, IFD0 is a 16 x 12 RGB thumbnail and the mosaic a SubIFD (as
    Adobe's converter writes); without, IFD0 is the mosaic. `preview` goes in a SubIFD."""
    data = mosaic() if sensor is None else sensor
    subs = [] if preview is None else [jpeg_ifd(preview)]
    if thumbnail:
        thumb = Image.new("RGB", (16, 12), GREEN)
        small: dict[int, Tag] = {254: ("I", [1]), 256: ("I", [16]), 257: ("I", [12])}
        small |= {258: ("H", [8, 8, 8]), 259: ("H", [1]), 262: ("H", [2]), 277: ("H", [3])}
        small |= {278: ("I", [12]), 284: ("H", [1])}
        ifd0 = Ifd(
            camera_tags(orientation) | small, thumb.tobytes(), [Ifd(raw_tags(), data), *subs]
        )
    else:
        ifd0 = Ifd(camera_tags(orientation) | raw_tags(), data, subs)
    path.write_bytes(tiff(ifd0))
    return path


# ---------------------------------------------------------------------------------------------
# Helpers


def quadrant(im: Image.Image, pick: str) -> str:
    """Which quarter of `im` is the reddest ("red") or the brightest ("bright")."""
    w, h = im.size
    spots = {
        "top-left": (w // 4, h // 4),
        "top-right": (3 * w // 4, h // 4),
        "bottom-left": (w // 4, 3 * h // 4),
        "bottom-right": (3 * w // 4, 3 * h // 4),
    }

    def score(xy: tuple[int, int]) -> float:
        r, g, b = im.convert("RGB").getpixel(xy)  # type: ignore[misc]
        return float(r - g) if pick == "red" else float(r + g + b)

    return max(spots, key=lambda name: score(spots[name]))


def refused(path: Path, **kw: int) -> RawRefused:
    with pytest.raises(RawRefused) as caught:
        develop(str(path), largest=kw.get("largest", 200), max_pixels=kw.get("max_pixels", 10**8))
    return caught.value


BIG = (640, 480)  # a preview at least as large as the thumbnails asked for (200 px)


# ---------------------------------------------------------------------------------------------
# Preview or demosaic


def test_a_large_preview_is_used_shrunk_on_load(tmp_path: Path) -> None:
    src = make_dng(tmp_path / "a.dng", preview=preview_jpeg((1280, 960)))
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert picture.facts == {
        "kind": "raw",
        "camera": "Thumbd TestCam",
        "from": "preview",
        "raw_size": list(SENSOR),
    }
    # Drafted to the smallest DCT scale still at least twice 200 px: 1/2 of 1280 x 960.
    assert picture.image.size == (640, 480) and picture.image.mode == "RGB"
    assert picture.profile is None  # sRGB
    assert quadrant(picture.image, "red") == "top-left"
    assert "exif" not in picture.image.info and "icc_profile" not in picture.image.info


def test_a_file_object_works_as_a_path_does(tmp_path: Path) -> None:
    src = make_dng(tmp_path / "a.dng", preview=preview_jpeg(BIG))
    with src.open("rb") as f:
        picture = develop(f, largest=200, max_pixels=10**8)
    assert picture.facts["from"] == "preview" and picture.facts["camera"] == "Thumbd TestCam"


@pytest.mark.parametrize("preview", [None, (160, 120)], ids=["thumbnail only", "small preview"])
def test_without_a_large_enough_preview_the_sensor_is_developed(
    tmp_path: Path, preview: tuple[int, int] | None
) -> None:
    jpeg = None if preview is None else preview_jpeg(preview)
    src = make_dng(tmp_path / "small.dng", preview=jpeg)
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert picture.facts["from"] == "demosaic" and picture.profile is None
    assert picture.image.size == (SENSOR[0] // 2, SENSOR[1] // 2)  # half size
    assert picture.image.mode == "RGB"
    im = picture.image
    # The camera's white balance makes the neutral scene grey; light right, dark left.
    r, g, b = im.getpixel((3 * im.width // 4, 3 * im.height // 4))  # type: ignore[misc]
    assert max(r, g, b) - min(r, g, b) < 12, (r, g, b)
    dark = im.getpixel((im.width // 4, 3 * im.height // 4))
    assert isinstance(dark, tuple) and dark[1] + 40 < g
    assert quadrant(im, "bright") == "top-left"


def test_a_preview_exactly_as_large_as_the_largest_thumbnail_is_enough(tmp_path: Path) -> None:
    src = make_dng(tmp_path / "a.dng", preview=preview_jpeg((320, 240)))
    assert develop(str(src), largest=320, max_pixels=10**8).facts["from"] == "preview"
    assert develop(str(src), largest=321, max_pixels=10**8).facts["from"] == "demosaic"


# ---------------------------------------------------------------------------------------------
# Orientation


@pytest.mark.parametrize("exif", ["none", "no orientation"])
def test_the_raw_orientation_turns_the_preview(tmp_path: Path, exif: str) -> None:
    # Orientation 6: the camera was turned right; the stored top-left belongs top-right.
    # A preview with no EXIF gets LibRaw's (stating the RAW's orientation); one whose EXIF
    # has no orientation keeps it, and thumbd applies the RAW's.
    tags = Image.Exif()
    tags[ExifTags.Base.Make] = "Thumbd"
    save = {"exif": tags.tobytes()} if exif == "no orientation" else {}
    src = make_dng(tmp_path / "portrait.dng", preview=preview_jpeg(BIG, **save), orientation=6)
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert picture.facts["from"] == "preview" and picture.facts["raw_size"] == [192, 256]
    assert picture.image.size == (480, 640)
    assert quadrant(picture.image, "red") == "top-right"


@pytest.mark.parametrize(("orientation", "corner"), [(3, "bottom-right"), (8, "bottom-left")])
def test_other_orientations_turn_the_preview_too(
    tmp_path: Path, orientation: int, corner: str
) -> None:
    src = make_dng(tmp_path / "o.dng", preview=preview_jpeg(BIG), orientation=orientation)
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert quadrant(picture.image, "red") == corner


def test_the_raw_orientation_turns_the_demosaic(tmp_path: Path) -> None:
    src = make_dng(tmp_path / "portrait.dng", orientation=6)
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert picture.facts["from"] == "demosaic"
    assert picture.image.size == (SENSOR[1] // 2, SENSOR[0] // 2)
    assert quadrant(picture.image, "bright") == "top-right"


def test_a_preview_with_its_own_orientation_is_turned_once(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    jpeg = preview_jpeg(BIG, exif=exif.tobytes())
    src = make_dng(tmp_path / "both.dng", preview=jpeg, orientation=6)
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert picture.image.size == (480, 640)
    assert quadrant(picture.image, "red") == "top-right"  # not turned twice (bottom-left)


def test_a_preview_stored_upright_is_not_turned(tmp_path: Path) -> None:
    src = make_dng(tmp_path / "upright.dng", preview=preview_jpeg((480, 640)), orientation=6)
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert picture.image.size == (480, 640)
    assert quadrant(picture.image, "red") == "top-left"


# ---------------------------------------------------------------------------------------------
# Colour of the preview


def test_a_preview_tagged_adobe_rgb_returns_the_adobe_rgb_profile(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.IFD.Interop] = {ExifTags.Interop.InteropIndex: "R03"}
    src = make_dng(tmp_path / "adobe.dng", preview=preview_jpeg(BIG, exif=exif.tobytes()))
    assert develop(str(src), largest=200, max_pixels=10**8).profile == icc.adobe_rgb()


def test_a_preview_interop_r98_is_srgb(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.IFD.Interop] = {ExifTags.Interop.InteropIndex: "R98"}
    src = make_dng(tmp_path / "srgb.dng", preview=preview_jpeg(BIG, exif=exif.tobytes()))
    assert develop(str(src), largest=200, max_pixels=10**8).profile is None


def test_a_preview_with_an_embedded_profile_returns_it(tmp_path: Path) -> None:
    p3 = icc.display_p3()
    src = make_dng(tmp_path / "p3.dng", preview=preview_jpeg(BIG, icc_profile=p3))
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert picture.profile == p3 and "icc_profile" not in picture.image.info


# ---------------------------------------------------------------------------------------------
# Broken files


def corrupt(jpeg: bytes) -> bytes:
    """The JPEG with its entropy-coded data replaced by bytes that are not a valid stream."""
    scan = jpeg.index(b"\xff\xda")
    return jpeg[: scan + 20] + b"\xff\x00\xff\xd0\xff\xff" * 200 + b"\x17" * 400


def test_a_corrupt_preview_falls_back_to_the_sensor(tmp_path: Path) -> None:
    src = make_dng(tmp_path / "bad.dng", preview=corrupt(preview_jpeg(BIG)))
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert picture.facts["from"] == "demosaic"
    assert picture.image.size == (SENSOR[0] // 2, SENSOR[1] // 2)


def test_a_corrupt_preview_and_broken_sensor_data_are_refused_quietly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # The mosaic is cut short: its strip claims more bytes than the file holds.
    src = make_dng(
        tmp_path / "worse.dng",
        preview=corrupt(preview_jpeg(BIG)),
        thumbnail=False,
        sensor=mosaic()[:1000],
    )
    e = refused(src)
    assert e.failure.reason.startswith(
        "corrupt RAW preview and the sensor data cannot be decoded: "
    ), e.failure.reason
    assert e.failure.kind is FailKind.TRUNCATED
    assert "Unexpected end of file" in e.failure.reason  # what LibRaw printed, without a path
    assert str(tmp_path) not in e.failure.reason
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing LibRaw printed reaches stderr


def test_broken_sensor_data_falls_back_to_a_small_preview(tmp_path: Path) -> None:
    src = make_dng(tmp_path / "cut.dng", sensor=mosaic()[:1000])  # a 16 x 12 IFD0 thumbnail
    picture = develop(str(src), largest=200, max_pixels=10**8)
    assert picture.facts["from"] == "preview" and picture.image.size == (16, 12)


def test_a_dng_with_no_image_data_is_refused(tmp_path: Path) -> None:
    # What exiftool's test images are: the tags of a camera, and no pixels.
    src = tmp_path / "empty.dng"
    src.write_bytes(tiff(Ifd(camera_tags() | {254: ("I", [0])})))
    e = refused(src)
    assert e.failure == Failure(FailKind.UNDECODABLE, "RAW file has no image data")


def test_a_raw_whose_data_libraw_does_not_know_is_unsupported(tmp_path: Path) -> None:
    # A camera's tags, and a mosaic in a compression no one has (9999).
    tags = camera_tags() | raw_tags() | {259: ("H", [9999])}
    src = tmp_path / "odd.dng"
    src.write_bytes(tiff(Ifd(tags, b"\x00" * 64)))
    e = refused(src)
    assert e.failure == Failure(
        FailKind.UNSUPPORTED,
        "unsupported RAW file: LibRaw cannot read this camera's format (Thumbd TestCam)",
    )


@pytest.mark.parametrize("content", ["garbage", "jpeg"])
def test_what_is_not_a_raw_file_is_unidentified(tmp_path: Path, content: str) -> None:
    src = tmp_path / "fake.dng"
    src.write_bytes(preview_jpeg(BIG) if content == "jpeg" else b"II*\0" + bytes(200))
    e = refused(src)
    assert e.failure.kind is FailKind.UNIDENTIFIED
    assert e.failure.reason == "not a RAW file LibRaw can read (unknown camera or format)"


def test_the_sensor_size_is_checked_before_developing(tmp_path: Path) -> None:
    src = make_dng(tmp_path / "big.dng")
    e = refused(src, max_pixels=SENSOR[0] * SENSOR[1] - 1)
    assert e.failure.kind is FailKind.TOO_LARGE
    pixels = SENSOR[0] * SENSOR[1]
    assert e.failure.reason == f"too large: {pixels} pixels exceeds max_pixels {pixels - 1}"


def test_a_preview_over_max_pixels_is_not_decoded(tmp_path: Path) -> None:
    src = make_dng(tmp_path / "p.dng", preview=preview_jpeg((1280, 960)))
    picture = develop(str(src), largest=200, max_pixels=1280 * 960 - 1)
    assert picture.facts["from"] == "demosaic"  # the sensor (256 x 192) is within the limit


def test_the_extensions_are_the_raw_formats() -> None:
    assert {".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"} <= RAW_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in RAW_EXTENSIONS)
    assert ".jpg" not in RAW_EXTENSIONS and ".tif" not in RAW_EXTENSIONS


def test_a_large_preview_is_drafted_for_the_thumbnails_aspect(tmp_path: Path) -> None:
    """A landscape preview 4608 px wide makes 200 px thumbnails: JPEG DCT scaling to 1/8
    (576 px) leaves 1.8 times what they need, as the JPEG decoder drafts; not 1/4."""
    from thumbd.render.decoders import raw
    from thumbd.render.spec import RenderSpec

    dng = make_dng(tmp_path / "wide.dng", preview=preview_jpeg((4608, 1976)))
    with dng.open("rb") as f:
        decoded = raw.decode(f, RenderSpec())
    assert decoded.picture.size == (576, 247)
